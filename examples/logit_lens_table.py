"""Print the logit lens of a sentence: the top-1 token of each layer at each position."""

from lenssample.lens.table import lens_table

import lenssample

model, tokenizer = lenssample.load_model()
print(lens_table(model, tokenizer, "The Eiffel Tower is located in the city of", last_positions=6))

"""Print the logit lens of a sentence: the top-1 token of each layer at each position (the layout of
``lenssample lens TEXT`` and ``lenssample demo``)."""

import lenssample
from lenssample.plotting.text import text_table

model, tokenizer = lenssample.load_model()
ids = tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids[0]
traj = lenssample.analysis.trajectory(model, tokenizer, ids, positions=range(len(ids) - 6, len(ids)))
print(text_table(traj, "prob"))

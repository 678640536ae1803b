"""Generate from an intermediate layer through the logit lens, next to the model's own output."""

import lenssample

model, tokenizer = lenssample.load_model()
prompt = "The three primary colours are"
for strategy in [lenssample.FinalLayer(), lenssample.SingleLayer(layer=26), lenssample.SingleLayer(layer=20)]:
    out = lenssample.generate(model, prompt, tokenizer=tokenizer, strategy=strategy, max_new_tokens=20)
    print(f"{strategy.to_dict()}: {prompt}{out.texts(tokenizer)[0]!r}")

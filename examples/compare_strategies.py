"""The same prompts decoded greedily with several layer-mixing and contrast strategies, side by side.

    python examples/compare_strategies.py

The same strategies are available from the command line, e.g.
``lenssample generate "The capital of France is" --strategy dola --set layers=high``.
"""

import lenssample

model, tokenizer = lenssample.load_model()
strategies = [
    lenssample.FinalLayer(),
    lenssample.DoLa(layers="high"),
    lenssample.DoLaReference.for_model(model, layers="high"),  # transformers 4.55's DoLa, token for token
    lenssample.LayerContrast(beta=0.5),
    lenssample.AutoContrastive(),
    lenssample.SLED(),
    lenssample.LayerEnsemble(layers=list(range(24, 31)), weights="exponential", decay=0.5),
]
for prompt in ["The capital of France is", "Q: What is the boiling point of water at sea level?\nA:"]:
    print(f"\n### {prompt!r}")
    for strategy in strategies:
        out = lenssample.generate(
            model, prompt, tokenizer=tokenizer, strategy=strategy, max_new_tokens=20, repetition_penalty=1.2
        )
        layers = out.trace.info.get("premature_layer")
        chosen = f"  (premature layers {layers[0].tolist()})" if layers is not None else ""
        print(f"{strategy.name:>15}: {out.texts(tokenizer)[0]!r}{chosen}")

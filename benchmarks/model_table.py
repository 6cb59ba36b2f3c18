"""Print the model table of the README: parameters and multiply-accumulates of every registered model,
computed from the models themselves (1000 classes, 224x224 input).

    python benchmarks/model_table.py
"""
import numpy as np

from mindcv.models import create_model, list_models


def main() -> None:
    print("| model | depths | dims | params (M) | GMACs at 224 |")
    print("|---|---|---|---|---|")
    for name in list_models():
        model = create_model(name)
        params = sum(int(np.prod(p.shape)) for p in model.get_parameters())
        print(f"| {name} | {', '.join(map(str, model.depths))} | {', '.join(map(str, model.dims))} | "
              f"{params / 1e6:.2f} | {model.flops(224) / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()

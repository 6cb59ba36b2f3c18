"""The loss / accuracy plot of a run, redrawn after every epoch."""
import math
from typing import List


def plot_metrics(records: List[dict], path: str) -> None:
    """Draw training and validation loss (left) and validation top-1/top-5 (right) per epoch into a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    def series(key):
        points = [(r["epoch"], r[key]) for r in records if key in r and r[key] is not None and math.isfinite(r[key])]
        return [p[0] for p in points], [p[1] for p in points]

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        epochs, values = series(key)
        if values:
            loss_axes.plot(epochs, values, marker="o", label=label)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    for key, label in (("val_top1", "top-1"), ("val_top5", "top-5")):
        epochs, values = series(key)
        if values:
            accuracy_axes.plot(epochs, values, marker="o", label=label)
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)

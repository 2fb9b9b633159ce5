"""PNG figures for results a user would rather see than read; written atomically."""

from autodistil_evo.fileio import atomic_path


def new_figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(**kwargs)


def save_png(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

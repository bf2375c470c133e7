"""One plotting style for every notebook."""
import matplotlib.pyplot as plt

# Colour-blind-safe palette (Okabe-Ito), one colour per recurring idea.
COLORS = {
    "weights": "#0072B2", "gradients": "#D55E00", "momentum": "#CC79A7", "variance": "#E69F00",
    "absmax": "#D55E00", "zero_point": "#009E73", "lora": "#CC79A7", "full": "#0072B2",
    "fp32": "#0072B2", "int8": "#E69F00", "nf4": "#009E73",
}


def use_course_style() -> None:
    plt.rcParams.update({
        "figure.figsize": (9, 4), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "font.size": 11,
    })

"""Sentences computed from the run: a notebook states what it measured through `say`, never in typed prose.

    say(f"NF4 raised perplexity by **{rise:.1%}** on this run.")

In Jupyter the text renders as Markdown below the cell; elsewhere it is printed as it stands."""


def say(markdown: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(markdown))
            return
    except ImportError:
        pass
    print(markdown)

"""The Shakespeare text for finetuning: the tiny-shakespeare corpus in Colab, a bundled excerpt offline.

`load_dataset("karpathy/tiny_shakespeare")` no longer works (script-based datasets were dropped
from `datasets`), so the text is fetched as the plain file it is."""
import functools
import os
import pathlib
import urllib.request

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
BUNDLED = pathlib.Path(__file__).parent / "data" / "coriolanus.txt"


def bundled_text() -> str:
    return BUNDLED.read_text(encoding="utf-8")


@functools.cache
def load_shakespeare(max_chars: int = 50_000) -> str:
    """The first `max_chars` characters of tiny-shakespeare, or of the bundled excerpt when offline.

    Both begin with the same scene of Coriolanus, in the same "SPEAKER:\\nline" layout."""
    if os.environ.get("COURSE_OFFLINE") != "1":
        try:
            with urllib.request.urlopen(TINY_SHAKESPEARE_URL, timeout=5) as response:
                text = response.read().decode("utf-8")
            print(f"Text: tiny-shakespeare ({len(text):,} characters), using the first {max_chars:,}.")
            return text[:max_chars]
        except OSError:
            pass
    text = bundled_text()
    print(f"Text: offline, so the bundled excerpt of Coriolanus ({len(text):,} characters), "
          f"using the first {min(max_chars, len(text)):,}.")
    return text[:max_chars]

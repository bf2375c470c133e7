"""Library messages that say nothing true about a student's run, kept out of their notebooks.

- transformers 5 warns "`loss_type=None` was set in the config but it is unrecognized" for every GPT-2 (its
  class name does not say ForCausalLM), then uses the causal-LM loss, the right one.
- bitsandbytes on a CPU with AVX-512 looks for an optional faster 4-bit kernel package (`kernels`) and warns
  when it is absent; its own kernel runs instead.
Each filter drops only its one message; every other warning still shows."""
import logging

HARMLESS = {
    "transformers.modeling_utils": "was set in the config but it is unrecognized",
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
}


class _Drop(logging.Filter):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()


def quiet_harmless_messages():
    for name, text in HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(text))

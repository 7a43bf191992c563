"""Paths and helpers shared by tests (importable: pytest.ini puts tests/ on sys.path)."""

import contextlib
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()
SHARED_DATA = SHARED / "data"


@contextlib.contextmanager
def count_compiles():
    """Collects one entry per XLA backend compile while the block runs.

    Yields the list, which keeps growing until the block exits (read
    `len(...)` at any point inside it).
    """
    import jax

    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# Words a tag's text splits into under the whitespace pre-tokenizer
# (`\w+|[^\w\s]+`): `<end_of_step>` -> `<`, `end_of_step`, `>`.
TAG_PIECES = ["<", ">", "<|", "|>", "code", "end_of_step", "end_of_code", "output",
              "end_of_output", "answer", "end_of_answer", "user", "assistant"]


def pieces_tokenizer(path, size: int) -> str:
    """A local HF whole-word tokenizer of `size` ids, no network; the last 13
    words are the rStar tags' text pieces, the others `w1`, `w2`, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(1, size - len(TAG_PIECES))] + TAG_PIECES
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(str(path))
    return str(path)

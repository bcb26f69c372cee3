from __future__ import annotations

import io

from llamagate.download.progress import Progress


def test_log_mode_writes_a_line_per_tenth_and_resumes_counting_from_the_partial_file() -> None:
    stream = io.StringIO()
    progress = Progress(enabled=False, stream=stream)
    progress.start("llama-2-7b/consolidated.00.pth", total=1000, initial=350)
    for _ in range(65):
        progress.advance("llama-2-7b/consolidated.00.pth", 10)
    progress.finish("llama-2-7b/consolidated.00.pth", "ok: llama-2-7b/consolidated.00.pth")

    lines = stream.getvalue().splitlines()
    assert [line.split(": ")[1].split("%")[0] for line in lines[:-1]] == ["40", "50", "60", "70", "80", "90"]
    assert lines[-1] == "ok: llama-2-7b/consolidated.00.pth"
    assert "\r" not in stream.getvalue()


def test_bars_mode_draws_bars_and_notes_between_them() -> None:
    stream = io.StringIO()
    progress = Progress(enabled=True, stream=stream)
    progress.expect(100)
    progress.start("tokenizer.model", total=100, initial=0)
    progress.advance("tokenizer.model", 100)
    progress.finish("tokenizer.model", "ok: tokenizer.model")
    progress.close()

    out = stream.getvalue()
    assert "tokenizer.model" in out and "ok: tokenizer.model" in out and "100/100" in out

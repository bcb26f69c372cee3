"""`llamagate audit`: lists and filters what the sink wrote."""

import json

from llamagate.cli import main
from services.gateway.audit import AuditCategory, AuditRecord, AuditSink


async def write_some(directory):
    sink = AuditSink(directory)
    for i, (tenant, verdict) in enumerate([("acme", "safe"), ("acme", "unsafe"), ("umbrella", "safe")]):
        await sink.write(
            AuditRecord(
                request_id=f"req-{i}",
                tenant=tenant,
                direction="output",
                stage="chunk",
                chunk_index=i,
                verdict=verdict,
                categories=[
                    AuditCategory(
                        "O1", "Violence and Hate", 0.9 if verdict == "unsafe" else 0.1, verdict == "unsafe"
                    )
                ],
                classifier_id="embedded-minilm",
                classifier_version="head-1",
                text_sha256="ab" * 32,
                judged_tokens=40 + i,
                judged_segments=3,
                truncated=i == 2,
            )
        )
    await sink.close()


async def test_lists_filtered_records_as_json(tmp_path, capsys):
    await write_some(tmp_path)
    assert main(["audit", "--dir", str(tmp_path), "--unsafe", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["req-1"]

    assert main(["audit", "--dir", str(tmp_path), "--tenant", "acme"]) == 0
    captured = capsys.readouterr()
    assert "req-0" in captured.out and "req-1" in captured.out and "req-2" not in captured.out
    assert "2 record(s)" in captured.err
    assert "O1" in captured.out.splitlines()[1]  # the violated category is shown
    assert "40 tok/3 seg" in captured.out.splitlines()[0]  # how the text was read
    assert "TRUNCATED" not in captured.out

    assert main(["audit", "--dir", str(tmp_path), "--tenant", "umbrella"]) == 0
    assert "42 tok/3 seg TRUNCATED" in capsys.readouterr().out

    assert main(["audit", "--dir", str(tmp_path), "--request-id", "req-1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["judged_tokens"], record["judged_segments"], record["truncated"]) == (41, 3, False)


async def test_time_filters_and_bad_arguments(tmp_path, capsys):
    await write_some(tmp_path)
    assert main(["audit", "--dir", str(tmp_path), "--since", "2999-01-01T00:00:00Z", "--json"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["audit", "--dir", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err

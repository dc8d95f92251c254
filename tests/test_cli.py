import json

from autolrs.cli import main


def test_demo_prints_the_table_and_writes_json_and_png(tmp_path, capsys):
    assert main(["demo", "--steps", "600", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "chosen lr" in out and "forecast" in out and "reached" in out
    assert "autolrs" in out and "constant lr 0.1" in out
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["autolrs"]["steps_taken"] == 600 == record["constant_lr"]["steps_taken"]
    assert 0.0 <= record["autolrs"]["test_accuracy"] <= 1.0
    assert len(record["trace"]["step"]) == 600
    png = (tmp_path / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    assert main(["plot", str(tmp_path / "demo.json"), "-o", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").stat().st_size > 10_000

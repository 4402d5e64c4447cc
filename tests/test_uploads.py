import pytest

from ingest.uploads import MAX_NAME_BYTES, safe_upload_name, save_uploads


@pytest.mark.parametrize(
    ("name", "safe"),
    [("../../etc/passwd.txt", "passwd.txt"), ("/abs/path/notes.md", "notes.md"), ("C:\\Users\\me\\a b.pdf", "a b.pdf"),
     (".hidden.txt", "hidden.txt"), ("ok-name_1.html", "ok-name_1.html"), ("报告.pdf", "报告.pdf"),
     ("名前.md", "名前.md"), ("line\nbreak.txt", "line_break.txt"), ("CON.txt", "_CON.txt"), ("notes. ", "notes")],
)
def test_names_are_reduced_to_a_plain_file_name(name, safe):
    assert safe_upload_name(name) == safe


def test_unusable_and_unsupported_uploads_are_reported(tmp_path):
    saved, errors = save_uploads(tmp_path, [("..", b"x"), ("run.exe", b"x"), ("good.md", b"# hi")])
    assert [p.name for p in saved] == ["good.md"] and saved[0].parent == tmp_path / "uploads"
    assert errors[0] == "upload name '..' is not usable as a file name"
    assert errors[1].startswith("run.exe: unsupported file type '.exe'")


def test_uploads_never_overwrite_a_different_document(tmp_path):
    saved, errors = save_uploads(tmp_path, [("a b.txt", b"first"), ("a_b.txt", b"second"),
                                            ("a b.txt", b"third, same name"), ("a b.txt", b"first")])
    assert errors == []
    assert [p.name for p in saved] == ["a b.txt", "a_b.txt", "a b-2.txt", "a b.txt"]  # the same bytes: reused
    assert [p.read_bytes() for p in saved[:3]] == [b"first", b"second", b"third, same name"]


def test_long_names_keep_their_extension(tmp_path):
    long = "報" * 150 + ".pdf"  # 450 bytes in UTF-8
    safe = safe_upload_name(long)
    assert safe.endswith(".pdf") and len(safe.encode()) <= MAX_NAME_BYTES
    saved, _ = save_uploads(tmp_path, [(long, b"%PDF one"), (long, b"%PDF two")])
    assert [p.suffix for p in saved] == [".pdf", ".pdf"] and saved[0] != saved[1]

import pytest

from ingest.uploads import safe_upload_name, save_uploads


@pytest.mark.parametrize(
    ("name", "safe"),
    [("../../etc/passwd.txt", "passwd.txt"), ("/abs/path/notes.md", "notes.md"), ("C:\\Users\\me\\a b.pdf", "a_b.pdf"),
     (".hidden.txt", "hidden.txt"), ("ok-name_1.html", "ok-name_1.html")],
)
def test_names_are_reduced_to_a_plain_file_name(name, safe):
    assert safe_upload_name(name) == safe


def test_unusable_and_unsupported_uploads_are_reported(tmp_path):
    saved, errors = save_uploads(tmp_path, [("..", b"x"), ("run.exe", b"x"), ("good.md", b"# hi")])
    assert [p.name for p in saved] == ["good.md"] and saved[0].parent == tmp_path / "uploads"
    assert errors[0] == "upload name '..' is not usable as a file name"
    assert errors[1].startswith("run.exe: unsupported file type '.exe'")

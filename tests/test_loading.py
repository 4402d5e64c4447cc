from pathlib import Path

import pytest

from conftest import SAMPLE
from rag.loading import LoadError, decode_text, discover, extraction_failed, load, repair_mojibake


def test_pdf_keeps_page_numbers():
    doc = load(SAMPLE / "marmot_field_notes.pdf")
    assert [p.page for p in doc.pages] == [1, 2, 3, 4, 5]
    assert "hibernate for about six months" in " ".join(doc.pages[4].text.split())


def test_html_to_text_drops_scripts_and_styles():
    text = load(SAMPLE / "tidy_t3_manual.html").pages[0].text
    assert "at least four hours" in " ".join(text.split())
    assert "console.log" not in text and "font-family" not in text


def test_invalid_utf8_bytes_are_replaced_not_fatal(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_bytes("Caf\u00e9 notes: the rank is 8.\n".encode() * 50 + b"bad byte \xff here\n")
    doc = load(path)
    assert "the rank is 8" in doc.pages[0].text
    assert any("invalid UTF-8" in w for w in doc.warnings)


def test_legacy_encoding_is_detected(tmp_path: Path):
    path = tmp_path / "latin.txt"
    path.write_bytes(("Les élèves ont étudié à l'école près du château. " * 20).encode("cp1252"))
    text = load(path).pages[0].text
    assert "élèves" in text and "château" in text


def test_cp1252_mojibake_is_repaired():
    fixed, notes = repair_mojibake("The model\u00e2\u20ac\u2122s rank is caf\u00c3\u00a9-sized.")
    assert fixed == "The model\u2019s rank is café-sized."
    assert notes == ["mojibake repaired by ftfy"]


def test_lossy_thai_mojibake_is_cleaned(mojibake_file):
    doc = load(mojibake_file)
    text = doc.pages[0].text
    assert not any("\u0e00" <= ch <= "\u0e7f" for ch in text)
    assert "struggle to truly learn new things while remembering old ones." in text
    assert any("lossy mojibake" in w for w in doc.warnings)


def test_thai_document_is_left_alone():
    thai = "ภาษาไทยเป็นภาษาราชการของประเทศไทย " * 5
    assert repair_mojibake(thai)[0] == thai


def test_extraction_failure_detects_glued_words():
    glued = "whatisadebianpackageandhowdoesitsdependencyresolutionworkinpractice" * 4
    assert extraction_failed(glued)
    assert extraction_failed("   ")
    assert not extraction_failed("What is a Debian package and how does dependency resolution work? " * 5)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", r"empty\.txt: empty file"),
        ("blank.md", b"   \n\n", r"blank\.md: empty file"),
        ("binary.txt", b"\x00\x01\x02\x03PK\x00" * 100, r"binary\.txt: binary data, not text"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n", r"broken\.pdf: not a readable PDF"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path: Path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError, match=message) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_encrypted_pdf(tmp_path: Path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(SAMPLE / "marmot_field_notes.pdf").pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", algorithm="AES-128")
    path = tmp_path / "locked.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)
    with pytest.raises(LoadError, match=r"locked\.pdf: encrypted PDF"):
        load(path)


def test_discover_walks_folders_and_globs_and_reports_bad_paths(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.md").write_text("one")
    (tmp_path / "a" / "image.png").write_bytes(b"\x89PNG")  # ignored inside a folder
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "a" / ".hidden" / "secret.txt").write_text("no")
    (tmp_path / "two.txt").write_text("two")
    (tmp_path / "named.docx").write_text("x")
    found = discover([tmp_path / "a", str(tmp_path / "*.txt"), tmp_path / "missing.pdf", tmp_path / "named.docx"])
    assert sorted(p.name for p in found.files) == ["one.md", "two.txt"]
    assert found.skipped_counts() == {"unsupported file type '.png'": 1, "hidden": 1}
    messages = [str(e) for e in found.errors]
    assert any("missing.pdf: no such file or folder" in m for m in messages)
    assert any("named.docx: unsupported file type '.docx'" in m for m in messages)


def test_decode_rejects_control_garbage(tmp_path: Path):
    with pytest.raises(LoadError, match="binary data"):
        decode_text(tmp_path / "x.txt", bytes(range(1, 32)) * 200)


def test_pdf_with_owner_password_only_is_read(tmp_path: Path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(SAMPLE / "marmot_field_notes.pdf").pages:
        writer.add_page(page)
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-256")
    path = tmp_path / "restricted.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)
    assert "33 days" in " ".join(load(path).pages[2].text.split())


@pytest.mark.parametrize("depth", [300, 3000, 10_000])
def test_deeply_nested_html_keeps_its_text(tmp_path: Path, depth):
    path = tmp_path / "deep.html"
    path.write_text("<html><body><p>Before the nest.</p>" + "<div>" * depth + "The deep sentence."
                    + "</div>" * depth + "<p>After the nest.</p></body></html>")
    doc = load(path)
    text = " ".join(doc.pages[0].text.split())
    assert "Before the nest. The deep sentence. After the nest." == text
    assert depth < 1000 or any("nested too deep" in w for w in doc.warnings)

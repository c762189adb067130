"""effocr.document: the page model's geometry helpers and reading-order iteration."""

from effocr.document import Line, Page, Region, box_polygon, polygon_box


def test_box_polygon_round_trip():
    box = (3.0, 4.0, 10.5, 20.0)
    assert box_polygon(box) == [(3.0, 4.0), (10.5, 4.0), (10.5, 20.0), (3.0, 20.0)]
    assert polygon_box(box_polygon(box)) == box


def test_polygon_box_of_a_tilted_outline():
    assert polygon_box([(5, 1), (9, 3), (7, 8), (2, 6)]) == (2, 1, 9, 8)


def test_page_lines_and_text_follow_reading_order():
    def line(i, text):
        return Line(id=f"l{i}", polygon=box_polygon((0, i * 10, 50, i * 10 + 8)), text=text)

    page = Page(
        image="p.png",
        width=100,
        height=100,
        regions=[
            Region(
                id="r1", polygon=box_polygon((0, 0, 50, 20)), lines=[line(0, "a b"), line(1, "c")]
            ),
            Region(id="r2", polygon=box_polygon((0, 30, 50, 50)), lines=[]),
            Region(id="r3", polygon=box_polygon((0, 60, 50, 80)), lines=[line(6, "d")]),
        ],
    )
    assert [ln.id for ln in page.lines()] == ["l0", "l1", "l6"]
    assert page.text == "a b\nc\n\nd"
    assert page.regions[0].lines[1].bbox == (0, 10, 50, 18)

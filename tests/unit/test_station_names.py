"""The station-name lookup: prefixes of name, pinyin, initials and telegraph code, case-insensitive."""

from __future__ import annotations

from railbook.services.search.station_names import spell, station_names

CATALOG = [
    ("北京", "BJP", "beijing", "北京"),
    ("北京南", "VNP", "", "北京"),
    ("北京西", "BXP", "", "北京"),
    ("重庆北", "CUW", "", "重庆"),
    ("上海虹桥", "AOH", "Shang Hai Hong Qiao", "上海"),
    ("长沙南", "CWQ", "", "长沙"),
]


def names(found: list[object]) -> list[str]:
    return [s.name for s in found]  # type: ignore[attr-defined]


def test_pinyin_and_initials_are_generated_when_the_catalog_has_none() -> None:
    assert spell("北京南") == ("beijingnan", "bjn")
    assert spell("重庆北") == ("chongqingbei", "cqb")  # the place-name reading, not zhongqing
    assert spell("长沙南") == ("changshanan", "csn")
    assert spell("上海虹桥", "Shang Hai Hong Qiao") == ("shanghaihongqiao", "shhq")


def test_lookup_by_each_spelling() -> None:
    index = station_names(CATALOG)
    assert names(index.starting_with("bjn")) == ["北京南"]
    assert names(index.starting_with("BJN")) == ["北京南"]
    assert names(index.starting_with("beijingx")) == ["北京西"]
    assert names(index.starting_with("vnp")) == ["北京南"]
    assert names(index.starting_with("VN")) == ["北京南"]
    assert names(index.starting_with("北京南")) == ["北京南"]
    assert names(index.starting_with("cqb")) == ["重庆北"]
    assert names(index.starting_with("shhq")) == ["上海虹桥"]
    assert index.starting_with("xyz") == [] and index.starting_with("") == []


def test_closest_spelling_first_each_station_once() -> None:
    index = station_names(CATALOG)
    # "bj" is the whole initials of 北京, a prefix of the others'.
    assert names(index.starting_with("bj")) == ["北京", "北京西", "北京南"]
    assert names(index.starting_with("北京")) == ["北京", "北京西", "北京南"]
    assert len(index.starting_with("b")) == 3  # by initials, pinyin and code: still once each


def test_at_most_twenty() -> None:
    many = [(f"站{i:03d}", f"Z{chr(65 + i // 26)}{chr(65 + i % 26)}", "", "") for i in range(60)]
    index = station_names(many)
    assert len(index.starting_with("z")) == 20
    assert len(index.starting_with("zhan0", limit=5)) == 5

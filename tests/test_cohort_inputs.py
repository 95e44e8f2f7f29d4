"""The inputs of a cohort run: scan lists (globs, list files), subject ids, label maps paired with scans."""
import pytest

from captum_smocam.cohort_inputs import find_scans, match_labels, subject_id


def test_inputs_and_label_pairing(tmp_path, capsys):
    for name in ("sub-02_T1w.nii.gz", "sub-01_ses-1_T1w.nii", "a_seg.nii.gz", "b_seg.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    scans = find_scans([str(tmp_path / "sub-*_T1w.nii*")])
    assert [subject_id(s) for s in scans] == ["sub-01_ses-1", "sub-02"]
    (tmp_path / "list.txt").write_text("# scans\nsub-02_T1w.nii.gz\n\n")
    assert find_scans(str(tmp_path / "list.txt")) == [tmp_path / "sub-02_T1w.nii.gz"]
    with pytest.raises(ValueError, match="nothing_here"):
        find_scans(str(tmp_path / "nothing_here*.nii.gz"))
    # By subject id, whatever the order of the label files.
    labels = [str(tmp_path / "x" / "sub-02_labels.nii.gz"), str(tmp_path / "x" / "sub-01_ses-1_labels.nii.gz")]
    pairs = match_labels(scans, labels)
    assert {s.name: p.name for s, p in pairs.items()} == {
        "sub-01_ses-1_T1w.nii": "sub-01_ses-1_labels.nii.gz", "sub-02_T1w.nii.gz": "sub-02_labels.nii.gz"}
    # No ids in common: refused, unless sorted order is asked for.
    with pytest.raises(ValueError, match="--pair-labels sorted"):
        match_labels(scans, str(tmp_path / "*_seg.nii.gz"))
    pairs = match_labels(scans, str(tmp_path / "*_seg.nii.gz"), pairing="sorted")
    assert [p.name for p in pairs.values()] == ["a_seg.nii.gz", "b_seg.nii.gz"]
    assert "sorted order" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sub-01_ses-1"):
        match_labels(scans, [str(tmp_path / "a_seg.nii.gz")])


def test_subject_ids_are_safe_and_distinct():
    ids = [subject_id(n) for n in ("..nii.gz", "...nii.gz", ".nii.gz", "a b.nii", "a-b.nii", "x/../y.nii")]
    assert len(set(ids)) == len(ids)
    assert all(i and not i.startswith(".") and all(c.isalnum() or c in "._+-" for c in i) for i in ids)
    assert subject_id("a-b.nii") == "a-b" and subject_id("scan.v1.nii.gz") == "scan.v1"
    assert subject_id("/data/sub-01_ses-2_T1w.nii.gz") == "sub-01_ses-2"


def test_label_pairing_by_id_never_by_order_unless_asked(tmp_path, capsys):
    scans = [tmp_path / f"sub-0{i}_T1w.nii.gz" for i in (1, 2, 3)]
    # sub-03 has no label map, and no label file is left over: it gets no region table, and that is said.
    labels = [str(tmp_path / "x" / "sub-02_labels.nii.gz"), str(tmp_path / "x" / "sub-01_labels.nii.gz")]
    pairs = match_labels(scans, labels)
    assert {s.name: p.name for s, p in pairs.items()} == {
        "sub-01_T1w.nii.gz": "sub-01_labels.nii.gz", "sub-02_T1w.nii.gz": "sub-02_labels.nii.gz"}
    assert "sub-03" in capsys.readouterr().err
    # A label file that matches no scan beside a scan without one: ambiguous, refused.
    with pytest.raises(ValueError, match=r"sub-03.*seg_a\.nii\.gz.*--pair-labels sorted"):
        match_labels(scans, [*labels, str(tmp_path / "seg_a.nii.gz")])
    # Several label files with one scan's id: refused.
    with pytest.raises(ValueError, match="2 label maps have the id 'sub-01'"):
        match_labels(scans[:1], [labels[1], str(tmp_path / "y" / "sub-01_labels.nii.gz")])
    # Sorted order only when asked, and only with as many label maps as scans.
    segs = [str(tmp_path / f"seg_{c}.nii.gz") for c in "abc"]
    pairs = match_labels(scans, segs, pairing="sorted")
    assert [p.name for p in pairs.values()] == ["seg_a.nii.gz", "seg_b.nii.gz", "seg_c.nii.gz"]
    assert "sorted order" in capsys.readouterr().err
    with pytest.raises(ValueError, match="3 scans but 2 label maps"):
        match_labels(scans, segs[:2], pairing="sorted")

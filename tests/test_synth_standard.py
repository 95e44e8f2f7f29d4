"""smocam synth on FSL's MNI152 grids with FreeSurfer aseg codes (issue 20)."""
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from captum_smocam.cli import main
from captum_smocam.regions import read_lut
from captum_smocam.synth.standard import FREESURFER_ASEG, freesurfer_codes, label_table, standard_grid


def test_standard_grids_are_fsl_mni152():
    shape, affine = standard_grid("mni2mm")
    assert shape == (91, 109, 91)
    np.testing.assert_array_equal(affine, [[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    shape, affine = standard_grid("mni1mm")
    assert shape == (182, 218, 182) and affine[0, 0] == -1.0 and affine[0, 3] == 90.0
    # MNI (0, 0, 0) is voxel (45, 63, 36) of the 2 mm grid, as in FSL
    np.testing.assert_allclose(np.linalg.inv(standard_grid("mni2mm")[1]) @ [0, 0, 0, 1], [45, 63, 36, 1])
    with pytest.raises(ValueError, match="unknown grid 'mni3mm'"):
        standard_grid("mni3mm")


def test_freesurfer_codes_and_lut():
    assert freesurfer_codes(np.array([0, 3, 4, 1, 2])).tolist() == [0, 17, 53, 4, 43]
    names, colors = label_table("freesurfer")
    assert names[17] == "Left-Hippocampus" and names[53] == "Right-Hippocampus" and names[2] == \
        "Left-Cerebral-White-Matter" and colors[17] == (220, 216, 20)
    assert sorted(names) == sorted(code for code, _ in FREESURFER_ASEG.values())


def test_synth_cli_writes_mni2mm_scans_with_aseg_codes(tmp_path):
    """On today's main --spacing 2 gave 84 x 102 x 90 and labels 1-16; --grid/--label-codes did not exist."""
    out = tmp_path / "cohort"
    assert main(["synth", "--n", "1", "--out", str(out), "--grid", "mni2mm", "--label-codes", "freesurfer",
                 "--no-progress"]) == 0
    t1, lab = nib.load(out / "sub-0000_T1w.nii.gz"), nib.load(out / "sub-0000_labels.nii.gz")
    for img in (t1, lab):
        assert img.shape == (91, 109, 91)
        np.testing.assert_array_equal(img.affine, standard_grid("mni2mm")[1])
        assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    labels = np.asarray(lab.dataobj)
    lut = read_lut(out / "labels.txt")
    assert set(np.unique(labels)) - {0} <= set(lut) and {17, 53, 4, 43, 10, 49} <= set(np.unique(labels))
    assert lut[17] == "Left-Hippocampus"
    # Left is left: the left hippocampus (17) lies at world x < 0.
    for code, sign in ((17, -1), (53, 1)):
        ijk = np.argwhere(labels == code).T
        x = (lab.affine[:3, :3] @ ijk + lab.affine[:3, 3:])[0]
        assert np.sign(x.mean()) == sign and np.all(np.sign(x) == sign)
    volumes = pd.read_csv(out / "volumes.csv")
    n17 = int((labels == 17).sum()) * 8 / 1000.0  # cm3 of the resampled label
    assert volumes.loc[0, "left_hippocampus"] == pytest.approx(n17, rel=0.15)


def test_synth_cli_refuses_grid_with_spacing(tmp_path, capsys):
    assert main(["synth", "--n", "1", "--out", str(tmp_path / "x"), "--grid", "mni2mm", "--spacing", "2"]) == 2
    assert "--spacing" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

import numpy as np
import pytest
import torch

from hflpipe.model.checkpoint import load_hand_layer
from hflpipe.model.inference_speed import fold_batch_norms
from hflpipe.pipeline.infer.predictor import HflnetPredictor, PredictorSettings
from hflpipe.pipeline.smooth.tables import hand_mesh


@pytest.fixture(scope="module")
def batch(fixtures_dir):
    inputs = np.load(fixtures_dir / "inputs_a.npz")
    return {"images": inputs["images"][:2], "hand_boxes": inputs["bbox_hand"][:2],
            "object_boxes": inputs["bbox_obj"][:2]}


def test_the_optimised_predictor_matches_the_plain_network(synthetic_checkpoint, batch):
    torch.set_num_threads(2)
    fast = HflnetPredictor(PredictorSettings(synthetic_checkpoint, device="cpu"))
    plain = HflnetPredictor(PredictorSettings(synthetic_checkpoint, device="cpu",
                                              optimize=False))
    a, b = fast(batch), plain(batch)
    assert set(a) == set(b)
    for name in ("joints2d", "joints3d", "mano_pose", "obj_keypoints"):
        np.testing.assert_allclose(a[name], b[name], atol=1e-3 if name.endswith("2d") or
                                   name == "obj_keypoints" else 1e-4, err_msg=name)
    assert a["obj_candidates"].shape[1:] == (10, 21, 2)
    # The hand layer read alone from the checkpoint re-poses the network's own hands.
    mesh = hand_mesh(load_hand_layer(synthetic_checkpoint), a["mano_pose"], a["mano_shape"],
                     with_vertices=True)
    np.testing.assert_allclose(mesh["joints"], a["joints3d"], atol=1e-5)
    assert mesh["vertices"].shape == (2, 778, 3)


def test_folding_refuses_a_network_in_training_mode():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError):
        fold_batch_norms(net.train())

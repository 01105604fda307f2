"""entrolab.batch.RolloutBatch: validation names the field; select / replace / to."""

from __future__ import annotations

import pytest
import torch
from batches import make_batch

from entrolab.batch import BatchError, RolloutBatch

NAN = float("nan")


def _fields(**changes):
    B, T = 3, 4
    base = dict(
        response_ids=torch.zeros(B, T, dtype=torch.long),
        response_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32),
        old_logprobs=-torch.rand(B, T, generator=torch.Generator().manual_seed(0)),
        rewards=torch.tensor([1.0, 0.0, 1.0]),
        group_ids=torch.tensor([0, 0, 1]),
    )
    base.update(changes)
    return base


def test_valid_batch_and_views():
    b = RolloutBatch(**_fields())
    assert b.batch_size == 3 and b.num_tokens == 7
    assert b.mask.dtype == torch.float32
    assert b.global_num_tokens is None and b.step == 0


@pytest.mark.parametrize("changes, field, what", [
    ({"response_ids": torch.zeros(3, 4)}, "response_ids", "integer"),                      # float ids
    ({"response_ids": torch.zeros(3, 4, dtype=torch.bool)}, "response_ids", "integer"),
    ({"response_ids": torch.zeros(12, dtype=torch.long)}, "response_ids", "(B, T)"),
    ({"response_mask": torch.ones(3, 5)}, "response_mask", "(3, 4)"),                      # wrong shape
    ({"response_mask": torch.full((3, 4), 0.5)}, "response_mask", "0 or 1"),               # bad values
    ({"response_mask": torch.full((3, 4), 2, dtype=torch.long)}, "response_mask", "0 or 1"),
    ({"response_mask": torch.ones(3, 4, dtype=torch.complex64)}, "response_mask", "bool or float"),
    ({"old_logprobs": torch.zeros(3, 5)}, "old_logprobs", "(3, 4)"),
    ({"old_logprobs": torch.zeros(3, 4, dtype=torch.long)}, "old_logprobs", "floating"),
    ({"old_logprobs": torch.tensor([[NAN, 0., 0., 0.]] * 3)}, "old_logprobs", "NaN or inf on valid tokens"),
    ({"old_logprobs": torch.full((3, 4), 0.5)}, "old_logprobs", "<= 0"),                    # positive log-probs
    ({"logprobs": torch.full((3, 4), 0.5)}, "logprobs", "<= 0"),
    ({"ref_logprobs": torch.full((3, 4), 0.5)}, "ref_logprobs", "<= 0"),
    ({"entropy": torch.full((3, 4), float("inf"))}, "entropy", "NaN or inf"),
    ({"advantages": torch.zeros(3)}, "advantages", "(3, 4)"),
    ({"rewards": torch.zeros(4)}, "rewards", "(3,)"),
    ({"rewards": torch.tensor([1.0, NAN, 0.0])}, "rewards", "NaN or inf"),
    ({"group_ids": torch.zeros(3)}, "group_ids", "integer"),                                # float ids
    ({"group_ids": torch.zeros(2, dtype=torch.long)}, "group_ids", "(3,)"),
    ({"extras": {"prompt": torch.zeros(2)}}, "extras['prompt']", "B=3"),                   # extras leading dim
    ({"extras": {"x": torch.tensor(1.0)}}, "extras['x']", "B=3"),
])
def test_validation_errors_name_the_field(changes, field, what):
    with pytest.raises(BatchError) as e:
        RolloutBatch(**_fields(**changes))
    msg = str(e.value)
    assert f"RolloutBatch.{field}" in msg
    assert what in msg


def test_nan_and_positive_values_on_padding_are_fine():
    f = _fields()
    pad = f["response_mask"] == 0
    old = f["old_logprobs"].clone()
    old[pad] = NAN
    lp = f["old_logprobs"].clone()
    lp[pad] = 5.0  # positive, but on padding
    b = RolloutBatch(**_fields(old_logprobs=old, logprobs=lp, entropy=torch.where(pad, NAN, 1.0)))
    assert b.num_tokens == 7


def test_int_and_bool_masks_are_converted():
    f = _fields()
    for m in (f["response_mask"].bool(), f["response_mask"].long()):
        b = RolloutBatch(**_fields(response_mask=m))
        assert b.response_mask.dtype == torch.float32
        torch.testing.assert_close(b.response_mask, f["response_mask"])


def test_select_with_indices_and_bool_mask():
    b = make_batch([4, 2, 3, 1], extras={"prompt": torch.tensor([7, 8, 9, 10])},
                   advantages=torch.ones(4, 4), step=5)
    b = b.replace(global_num_tokens=10.0, global_num_seqs=4.0)
    sub = b.select(torch.tensor([2, 0]))
    assert sub.batch_size == 2
    torch.testing.assert_close(sub.old_logprobs, b.old_logprobs[[2, 0]])
    torch.testing.assert_close(sub.response_mask, b.response_mask[[2, 0]])
    torch.testing.assert_close(sub.extras["prompt"], torch.tensor([9, 7]))
    assert sub.step == 5
    assert sub.global_num_tokens is None and sub.global_num_seqs is None  # normalisers belong to the parent
    sub2 = b.select(torch.tensor([False, True, False, True]))
    assert sub2.num_tokens == 3
    torch.testing.assert_close(sub2.rewards, b.rewards[[1, 3]])
    assert b.batch_size == 4  # the original is untouched


def test_replace_revalidates_and_shares_tensors():
    b = make_batch([2, 3])
    lp = b.old_logprobs.clone()
    r = b.replace(logprobs=lp, step=3)
    assert r.logprobs is lp and r.step == 3 and b.logprobs is None
    assert r.old_logprobs is b.old_logprobs
    with pytest.raises(BatchError, match="RolloutBatch.logprobs"):
        b.replace(logprobs=torch.zeros(2, 2))


def test_to_dtype_device_roundtrip():
    b = make_batch([2, 3], extras={"prompt": torch.tensor([1, 2])}, entropy=torch.ones(2, 3))
    c = b.to("cpu")
    assert c is not b
    for name in ("response_ids", "response_mask", "old_logprobs", "rewards", "group_ids", "entropy"):
        assert getattr(c, name).device.type == "cpu"
        torch.testing.assert_close(getattr(c, name), getattr(b, name))
    assert c.extras["prompt"].device.type == "cpu"


def test_require_names_missing_fields():
    b = make_batch([2, 3])
    b.require("old_logprobs")
    with pytest.raises(BatchError) as e:
        b.require("ref_logprobs", "entropy", who="my component")
    assert "my component" in str(e.value) and "ref_logprobs" in str(e.value) and "entropy" in str(e.value)

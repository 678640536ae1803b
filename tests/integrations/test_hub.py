"""``export_decoder`` / ``lenssample export-decoder``: transformers' own ``custom_generate=DIR`` loading runs it,
with the same tokens as :func:`lenssample.generate`."""

from __future__ import annotations

import pytest
import torch

import lenssample
from lenssample.cli import main
from lenssample.integrations.hub import export_decoder
from tests.conftest import make_tiny_model


@pytest.mark.parametrize("spec", ["dola:layers=[1,3]", "ensemble:weights=exponential,decay=0.5"])
def test_an_exported_folder_decodes_like_generate(tmp_path, spec):
    model = make_tiny_model("llama", seed=7)
    folder = export_decoder(tmp_path / "decoder", spec)
    assert (folder / "custom_generate" / "requirements.txt").read_text().strip() == "lenssample"
    assert spec.split(":")[0] in (folder / "README.md").read_text()
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    theirs = model.generate(ids, attention_mask=mask, custom_generate=str(folder), trust_remote_code=True,
                            max_new_tokens=7, do_sample=False, eos_token_id=None, pad_token_id=0)  # fmt: skip
    ours = lenssample.generate(model, ids, spec, attention_mask=mask, max_new_tokens=7, eos_token_id=[])
    assert torch.equal(theirs, ours.sequences)


def test_the_cli_writes_a_schedule_decoder_and_refuses_a_bad_spec(tmp_path, capsys):
    assert main(["export-decoder", str(tmp_path / "exit"), "--schedule", "early-exit:threshold=0.9"]) == 0
    assert "custom_generate" in capsys.readouterr().out
    code = (tmp_path / "exit" / "custom_generate" / "generate.py").read_text()
    assert "SCHEDULE = 'early-exit:" in code
    assert main(["export-decoder", str(tmp_path / "bad"), "--strategy", "dolla"]) == 2
    assert "did you mean 'dola'" in capsys.readouterr().err.lower()
    assert not (tmp_path / "bad").exists()


def test_the_lens_of_an_exported_decoder_is_checked_where_it_can_be(tmp_path, recwarn):
    """``"tuned"`` (a name only ``load_model``'s models carry) is refused; a lens path missing here warns (the
    decoder may run elsewhere); a hub id and an existing folder pass quietly."""
    with pytest.raises(ValueError, match="lens='tuned' names a model's cached lens only for models from"):
        export_decoder(tmp_path / "a", "dola", lens="tuned")
    with pytest.warns(UserWarning, match="lens '/no/such/lens' is not a folder here"):
        export_decoder(tmp_path / "b", "dola", lens="/no/such/lens")
    recwarn.clear()
    export_decoder(tmp_path / "c", "dola", lens="owner/lens-on-the-hub")
    export_decoder(tmp_path / "d", "dola", lens=str(tmp_path))
    assert not [w for w in recwarn if "not a folder here" in str(w.message)]

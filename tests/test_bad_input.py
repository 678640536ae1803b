"""Bad input at the API boundary: every entry raises naming the parameter, the value and the fix, before model work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lenssample as ls
from lenssample.analysis.layer_stats import layer_statistics
from lenssample.eval.perplexity import perplexity
from lenssample.validation import check_device, check_output_file, check_output_folder
from tests.conftest import VOCAB, make_tiny_model, make_tiny_tokenizer

IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])
RIGHT_PADDED = torch.tensor([[1, 1, 1, 1, 0, 0]])
LONG = torch.randint(3, VOCAB, (1, 129), generator=torch.Generator().manual_seed(0))  # the tiny models: 128
DRAFT = ls.LayerDraft(layer=2)

# (model -> the call), the exception, a fragment of its message
API = [
    (lambda m: ls.score(m, torch.tensor([[5, 500]]), ls.FinalLayer()), ValueError, "token id 500, outside"),
    (lambda m: ls.apply_lens(m, torch.tensor([[5, -3]])), ValueError, "token id -3, outside the model's vocabulary"),
    (lambda m: ls.trajectory(m, None, [5, 96]), ValueError, "text contains token id 96"),
    (lambda m: ls.score(m, IDS, ls.FinalLayer(), attention_mask=IDS * 0 + 2), ValueError, "other than 0 and 1"),
    (lambda m: ls.apply_lens(m, IDS, attention_mask=IDS * 0.5), ValueError, "other than 0 and 1"),
    (lambda m: ls.generate(m, IDS, attention_mask=RIGHT_PADDED), ValueError, "tokenizer.padding_side = 'left'"),
    (lambda m: ls.generate(m, IDS, max_new_tokens=123), ValueError, "plus max_new_tokens=123 exceeds this model's 128"),
    (lambda m: ls.score(m, LONG, ls.FinalLayer()), ValueError, "the input has 129 tokens, more than this model's 128"),
    (lambda m: ls.generate(m, LONG, max_new_tokens=2), ValueError, "the prompt has 129 tokens, at least this model's 128 "
     "positions (max_position_embeddings), leaving none to generate; shorten it to at most 127 tokens"),
    (lambda m: ls.generate(m, make_tiny_tokenizer()), TypeError, "that looks like the tokenizer: pass it as tokenizer="),
    (lambda m: ls.generate(m, IDS, schedule="dola"), ValueError, "'dola' is a strategy: pass it as strategy=..."),
    (lambda m: ls.apply_lens(m, LONG), ValueError, "windows of at most 128 tokens"),
    (lambda m: ls.trajectory(m, None, LONG[0]), ValueError, "the input has 129 tokens"),
    (lambda m: layer_statistics(m, LONG), ValueError, "the input has 129 tokens"),
    (lambda m: layer_statistics(m, torch.tensor([5, 96])), ValueError, "token id 96, outside"),
    (lambda m: perplexity(m, ["some text"], ls.FinalLayer(), window=8), TypeError, "tokenize each text"),
    (lambda m: ls.generate(m, IDS, lens=5), TypeError, "lens must be a lenssample Lens (LogitLens, TunedLens)"),
    (lambda m: ls.apply_lens(m, IDS, layers="high"), TypeError, "layers='high' must be a list of layer numbers"),
    (lambda m: ls.generate(m, IDS, pad_token_id=96), ValueError, "pad_token_id=96 must be an integer in 0..95. Use a token id"),
    (lambda m: ls.generate(m, IDS, eos_token_id=[2, 500]), ValueError, "eos_token_id=500 must be an integer in 0..95. Use a token id"),
    (lambda m: ls.generate(m, IDS, repetition_penalty="1.2"), ValueError, "repetition_penalty='1.2' must be a number"),
    (lambda m: ls.generate(m, IDS, do_sample=True, seed="abc"), ValueError, "seed='abc' must be an integer >= 0"),
    (lambda m: ls.generate(m, IDS, "dola", do_sample=True, temperature=1e-45), ValueError,
     "temperature=1e-45 is outside [1e-06"),
    (lambda m: ls.SkipDraft(skip=3.0), ValueError, "SkipDraft(skip=3.0): pass one or more block indices >= 1"),
    (lambda m: ls.SkipDraft(skip=()), ValueError, "SkipDraft(skip=()): pass one or more block indices >= 1"),
    (lambda m: ls.SkipDraft(skip=(2, "a")), ValueError, "SkipDraft(skip=(2, 'a')): pass one or more block indices"),
    (lambda m: ls.LayerDraft(layer="a"), ValueError, "LayerDraft: layer='a' must be an integer >= 1. Pass a draft"),
    (lambda m: ls.LayerDraft(layer=0), ValueError, "LayerDraft: layer=0 must be an integer >= 1"),
    (lambda m: ls.strategy_from_name(None), ValueError, "strategy=None is not a name (a string). Known strategy"),
    (lambda m: ls.strategy_from_name("dola:alpha=2"), ValueError, "Pass the name alone, the parameters as keywords"),
    (lambda m: ls.SelfSpeculative(draft=DRAFT, prior_acceptance="abc"), ValueError,
     "prior_acceptance='abc' must be a number"),
    # issue 16 probe (evals/hardening/probe.py)
    (lambda m: ls.generate(m, IDS, do_sample=True, seed=2**64), ValueError, "seed=18446744073709551616 must be an integer in 0.."),
    (lambda m: ls.generate(m, IDS, stop_strings=5), ValueError, "stop_strings=5 must be one or more non-empty strings"),
    (lambda m: ls.generate(m, IDS, logits_processor="abc"), TypeError, "logits_processor must be a list of callables"),
    (lambda m: ls.generate(m, IDS, stopping_criteria=5), TypeError, "stopping_criteria must be a list of callables"),
    (lambda m: ls.generate(m, "hi", tokenizer="gpt2"), TypeError, "tokenizer must be a tokenizer object"),
    (lambda m: ls.score(m, IDS, return_log_probs="yes"), ValueError, "return_log_probs='yes' must be true or false"),
    (lambda m: ls.apply_lens(m, IDS, positions=[]), ValueError, "positions is empty"),
    (lambda m: ls.trajectory(m, None, [5, 6, 7], token_width=0), ValueError, "token_width=0 must be an integer >= 1"),
    (lambda m: layer_statistics(m, IDS.repeat(2, 1)), ValueError, "input_ids has 2 rows; layer_statistics reads one text"),
    (lambda m: layer_statistics(m, IDS, frequent=torch.tensor([500])), ValueError, "frequent contains token id 500"),
    (lambda m: layer_statistics(m, IDS, frequent=torch.tensor([1.5])), TypeError, "frequent must be a LongTensor"),
    (lambda m: ls.score(m, IDS, lens="/no/such/lens"), FileNotFoundError, "/no/such/lens"),
    # tensors without values (meta) or not dense fail here, not deep inside the model
    (lambda m: ls.generate(m, IDS.to("meta")), ValueError, "input_ids is on the meta device"),
    (lambda m: ls.score(m, IDS.to("meta")), ValueError, "input_ids is on the meta device"),
    (lambda m: ls.generate(m, IDS.to_sparse()), TypeError, "input_ids is a torch.sparse_coo tensor; pass a dense"),
    (lambda m: ls.generate(m, IDS, attention_mask=torch.ones(1, 6, device="meta")), ValueError,
     "attention_mask is on the meta device"),
    (lambda m: ls.generate(m, IDS, do_sample=True, generator="abc"), TypeError, "generator must be a torch.Generator"),
    # a prompt of a batch that tokenizes to nothing would be a row of padding alone
    (lambda m: ls.generate(m, ["t5 t6", "   "], tokenizer=make_tiny_tokenizer()), ValueError,
     "prompt 1 of the batch ('   ') is empty after tokenization"),
    (lambda m: ls.generate(m, "t5 caf\udce9", tokenizer=make_tiny_tokenizer()), ValueError,
     "is not valid UTF-8 text (character 6 is a stray byte)"),
    (lambda m: ls.apply_lens(m, IDS, positions=5), TypeError, "positions=5 must be a list of positions"),
    (lambda m: m.generate(torch.tensor([[5, 500]]), max_new_tokens=2, custom_generate=ls.custom_generate()),
     ValueError, "input_ids contains token id 500, outside"),
]  # fmt: skip


@pytest.fixture(scope="module", params=["llama", "gpt2"])  # gpt2: learned positions, no extrapolation at all
def model(request):
    return make_tiny_model(request.param)


@pytest.mark.parametrize("call, error, fragment", API, ids=range(len(API)))
def test_api_bad_input(model, call, error, fragment):
    with pytest.raises(error) as raised:
        call(model)
    assert fragment in str(raised.value)


# check, the path ({tmp}: a folder, {file}: a file in it), a fragment of the message
PATHS = [
    (check_output_file, "{tmp}", "is a folder; pass a file name inside it"),
    (check_output_file, "{file}/x.json", "folder '{file}' is a file, not a folder"),
    (check_output_file, "{tmp}/missing/x.json", "folder '{tmp}/missing' does not exist; create it first"),
    (check_output_folder, "{file}", "'{file}' is a file, not a folder"),
    (check_output_folder, "{file}/a/b", "'{file}/a/b': '{file}' is a file, not a folder"),
    (check_output_file, "/proc/lenssample-test.json", "is not writable"),  # refused even to root
    (check_output_folder, "/proc/lenssample-test", "is not writable"),
]


@pytest.mark.parametrize("check, path, fragment", PATHS, ids=range(len(PATHS)))
def test_output_paths_are_checked_before_any_work(check, path, fragment, tmp_path):
    if path.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    (tmp_path / "file").write_text("kept")
    place = lambda text: text.format(tmp=tmp_path, file=tmp_path / "file")  # noqa: E731
    with pytest.raises(ValueError, match="not writable|is a f|does not exist") as raised:
        check(place(path))
    assert place(fragment) in str(raised.value)
    assert [p.name for p in tmp_path.iterdir()] == ["file"] and (tmp_path / "file").read_text() == "kept"


def test_good_output_paths_pass_untouched(tmp_path):
    (tmp_path / "file").write_text("kept")
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "file") == tmp_path / "file"
    assert [p.name for p in tmp_path.iterdir()] == ["file"] and (tmp_path / "file").read_text() == "kept"


def test_lens_named_logit_is_accepted_everywhere(model):
    """lens="logit" works in apply_lens / score / trajectory / layer_statistics as in generate (issue 16 probe)."""
    assert torch.equal(ls.apply_lens(model, IDS, lens="logit").logits, ls.apply_lens(model, IDS).logits)
    assert torch.equal(ls.score(model, IDS, lens="logit").token_log_probs, ls.score(model, IDS).token_log_probs)
    ls.trajectory(model, None, IDS[0], lens="logit")
    layer_statistics(model, IDS, lens="logit")


@pytest.mark.parametrize("device", ["cuda", "tpu", 3.5, "meta"])
def test_load_model_checks_device_before_loading(device, monkeypatch):
    monkeypatch.setattr("lenssample.model.loading.resolve_model_dir", pytest.fail)
    with pytest.raises(ValueError, match="device="):
        ls.load_model("anything", device=device)


def test_load_model_checks_verify(monkeypatch):
    monkeypatch.setattr("lenssample.model.loading.resolve_model_dir", pytest.fail)
    with pytest.raises(ValueError, match="verify='yes' must be true or false"):
        ls.load_model("anything", verify="yes")


@pytest.mark.parametrize("device, fragment", [("nonsense", "not a torch device"), ("cuda:99", "not available"),
                                              ("meta", "holds no data")])  # fmt: skip
def test_devices_are_checked(device, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_device(device)
    assert check_device("cpu") == torch.device("cpu")


def test_numpy_and_tensor_layer_and_position_numbers_are_numbers(model):
    """Fresh probe: np.int64 layers were refused as out of range ("layers contains np.int64(0) ... 0..4")."""
    import numpy as np

    out = ls.apply_lens(model, IDS, layers=np.array([0, 4]), positions=torch.tensor([1, -1]))
    assert out.layers == (0, 4) and out.positions == (1, 5)
    assert torch.equal(out.logits, ls.apply_lens(model, IDS, layers=[0, 4], positions=[1, 5]).logits)

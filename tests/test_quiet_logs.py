"""Logs a user can read: progress bars that do not flood a file, no third-party warnings they cannot act on."""
import io
import warnings

from cctrnet.utilities import progress_bars
from cctrnet.utilities.progress_bars import LOG_REDRAW_SECONDS, quiet_bar_options
from cctrnet.utilities.third_party_warnings import silence_known_warnings

TORCH_JIT_MESSAGE = "`torch.jit.interface` is deprecated. Please use `torch.compile` instead."


def test_bars_redraw_rarely_and_nest_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress_bars, "writes_to_terminal", lambda: False)
    assert quiet_bar_options() == {"disable": False, "mininterval": LOG_REDRAW_SECONDS,
                                   "maxinterval": 10 * LOG_REDRAW_SECONDS}
    assert quiet_bar_options(nested=True)["disable"] and quiet_bar_options(enabled=False)["disable"]
    monkeypatch.setattr(progress_bars, "writes_to_terminal", lambda: True)
    assert quiet_bar_options() == {"disable": False} and quiet_bar_options(nested=True) == {"disable": False}


def test_a_bar_written_to_a_file_draws_a_few_times_not_once_per_step(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(progress_bars, "writes_to_terminal", lambda: False)
    log = io.StringIO()
    for _ in tqdm(range(2000), file=log, **quiet_bar_options()):
        pass
    assert log.getvalue().count("\r") <= 3  # the first and the last draw
    assert "\x1b[" not in log.getvalue()


def test_the_torch_jit_warning_of_a_dependency_is_silenced_and_nothing_else():
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        silence_known_warnings()
        warnings.warn_explicit(TORCH_JIT_MESSAGE, FutureWarning, "torch/jit/_script.py", 1643, module="torch.jit._script")
        warnings.warn_explicit(TORCH_JIT_MESSAGE, FutureWarning, "ours.py", 1, module="cctrnet.ours")
        warnings.warn_explicit("another warning", FutureWarning, "torch/jit/_script.py", 1, module="torch.jit._script")
    assert [str(w.message) for w in caught] == [TORCH_JIT_MESSAGE, "another warning"]

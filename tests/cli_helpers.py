"""Running `videollm-mod` in-process from a test, and what a user error looks like."""

from videollm_mod import cli


def run(capsys, *argv):
    """Exit status, stdout and stderr of `videollm-mod ARGV`."""
    capsys.readouterr()
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_user_error(status, err, *names):
    """Exit status 1 and one line on stderr that names every one of `names`."""
    assert status == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(str(name) in err for name in names), err

"""local/config_task.py: the recipe's task query, without importing the package or ESPnet."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_prints_one_task_per_config_without_importing_espnet():
    configs = [REPO / "conf" / "train_dense.yaml", REPO / "conf" / "tuning" / "train_espnet_transducer_conformer.yaml"]
    probe = ("import runpy, sys; sys.argv = ['config_task.py', *sys.argv[1:]]; "
             f"runpy.run_path({str(REPO / 'local' / 'config_task.py')!r}, run_name='__main__'); "
             "assert not any(m.split('.')[0] in ('espnet', 'espnet2', 'espnet_amortized') for m in sys.modules), "
             "'ESPnet or the package was imported'")
    result = subprocess.run([sys.executable, "-c", probe, *map(str, configs)], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["asr", "asr_transducer"]


def test_budget_conditioned_configs_are_told_apart(tmp_path, capsys):
    from config_task import main

    conditioned = tmp_path / "b.yaml"
    conditioned.write_text("encoder: amortized_transformer\nencoder_conf:\n    budget_conditioning: true\n")
    main(["--budget_conditioned", str(conditioned), str(REPO / "conf" / "train_amortized.yaml")])
    assert capsys.readouterr().out.split() == ["true", "false"]

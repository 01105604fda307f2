"""entrolab inside verl (Ray + FSDP + vLLM): the plugin that registers policy losses and advantage estimators
(``plugin.py``, loaded by verl's ``verl.plugins`` entry point in every process), the whole-loss replacement
(``losses.py``), the controller state carried from the driver to the ranks (``state.py``), the recipe trainer and its
entry point (``main_ppo.py``) and entrolab's verifiable reward as a verl custom reward function (``reward.py``).
verl is an optional extra (``pip install -e ".[verl]"``), imported only inside these modules. docs/scale-out.md."""

from pipeline.core.processes import collect_cycles_less_often, exit_without_teardown

collect_cycles_less_often()  # before the command imports anything heavy

from pipeline.cli import main  # noqa: E402

try:
    status = main()
except SystemExit as stop:
    status = stop.code
exit_without_teardown(status)

from pipeline.cli import main
from pipeline.core.processes import exit_without_teardown

try:
    status = main()
except SystemExit as stop:
    status = stop.code
exit_without_teardown(status)

pytest_plugins = ["lnpmsg.testing.pytest_tor"]

pytest_plugins = ("tests.fixtures.kafka", "tests.fixtures.pg", "tests.fixtures.llm")

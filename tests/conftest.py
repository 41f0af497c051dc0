import os

# The suite runs without API keys (AGL_AUTH=off): the APIs it starts, in process and as subprocesses (which inherit
# this environment), accept every request, as Agent Lightning's stock client needs. tests/auth/ turns keys on
# explicitly for the APIs it starts.
os.environ["AGL_AUTH"] = "off"

pytest_plugins = ("tests.fixtures.kafka", "tests.fixtures.pg", "tests.fixtures.llm")

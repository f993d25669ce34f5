Feature: cynork, the CLI, against a real orchestrator
  The `cynork` binary runs as a subprocess with its own HOME, talking REST to a real
  `cynode-orchestrator serve` started by environment.py. Table output is key=value
  lines, JSON output one object; exit codes 0 ok, 1 server, 2 usage, 3 auth, 4 not found.

  Background:
    Given a running orchestrator

  Scenario: status reports a healthy and ready gateway
    When I run "cynork status"
    Then the exit code is 0
    And stdout contains "health=ok"
    And stdout contains "ok=true"

  Scenario: log in, ask who I am, log out
    When I log in as admin
    Then the exit code is 0
    And stdout contains "logged_in=true handle=admin"
    And the config file holds tokens and has mode 0600
    When I run "cynork auth whoami"
    Then the exit code is 0
    And stdout matches "^id=\S+ handle=admin"
    When I run "cynork auth logout"
    Then the exit code is 0
    And the config file holds no tokens
    When I run "cynork auth whoami"
    Then the exit code is 3

  Scenario: whoami without a token
    Given I am not logged in
    When I run "cynork auth whoami"
    Then the exit code is 3
    And stderr is one line containing "not logged in"

  @node
  Scenario: create a task and wait for its result
    Given I am logged in as admin
    When I run "cynork task create --command 'echo hello-from-cynork' --result"
    Then the exit code is 0
    And stdout matches "^task_id=\S+"
    And stdout contains "status=completed"
    And stdout contains "hello-from-cynork"

  Scenario: list and get a task
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork task list"
    Then the exit code is 0
    And stdout contains "task_id={task_id}"
    When I run "cynork task get {task_id}"
    Then the exit code is 0
    And stdout matches "^task_id={task_id} .*status=(queued|running)"

  Scenario: a task that does not exist
    Given I am logged in as admin
    When I run "cynork task get 01ARZ3NDEKTSV4RRFFQ69G5FAV"
    Then the exit code is 4
    And stderr is one line containing "not found"

  Scenario: cancel asks for confirmation and a no keeps the task
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork task cancel {task_id}" answering "n"
    Then the exit code is 0
    And stdout is empty
    And the task is not canceled
    When I run "cynork task cancel {task_id}" answering "y"
    Then the exit code is 0
    And stdout contains "task_id={task_id} canceled=true"

  Scenario: cancel with -y does not ask
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork task cancel -y {task_id}"
    Then the exit code is 0
    And stdout contains "canceled=true"
    And stderr does not contain "Cancel task"

  Scenario: JSON output parses
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork -o json task list"
    Then the exit code is 0
    And stdout is one JSON object with keys "tasks, next_cursor"
    When I run "cynork -o json task get {task_id}"
    Then stdout is one JSON object with keys "task_id, status, input_mode"
    And stdout holds the fields of the gateway's task object
    When I run "cynork task create -o json --command true"
    Then stdout is one JSON object with keys "task_id, status"

  Scenario: a missing script file is a usage error before any request
    Given I am logged in as admin
    And a listener that counts connections
    When I run "cynork task create -s /nonexistent/script.sh" against the listener
    Then the exit code is 2
    And stderr is one line containing "does not exist"
    And the listener saw no connection

  Scenario: an unreachable gateway is one line and exit 1
    Given I am logged in as admin
    When I run "cynork task list" against a closed port
    Then the exit code is 1
    And stderr is one line containing "cannot reach the gateway"

  Scenario: a session revoked on the gateway is one line and exit 3
    Given I am logged in as admin
    And my session was revoked on the gateway
    When I run "cynork task list"
    Then the exit code is 3
    And stderr is one line containing "your session has expired or was revoked"

  # A token's exp is whole seconds (iat + TTL, truncated), so one issued with a TTL of N
  # lives N-1 to N seconds: a TTL of 1 could make the refreshed token expire before the
  # retried call reached the gateway (seen once in CI). With 3, the refreshed token lives
  # at least 2 s, and after 4 s the first one has certainly expired.
  Scenario: an expired access token is refreshed on its own and saved
    Given a gateway of its own with CYNODE_ACCESS_TOKEN_TTL set to "3"
    And I am logged in as admin
    And I remember the stored tokens
    And 4 seconds have passed
    When I run "cynork auth whoami"
    Then the exit code is 0
    And stdout matches "^id=\S+ handle=admin"
    And the stored tokens were rotated

  Scenario: a usage error is one line and exit 2
    When I run "cynork task get"
    Then the exit code is 2
    And stderr is one line containing "Missing argument 'ID'."

  Scenario: throttled logins are one line with the wait and exit 1
    Given a gateway of its own that throttles after 2 failed logins
    When I log in as admin with a wrong password 2 times
    And I log in as admin
    Then the exit code is 1
    And stderr is one line containing "too many requests"
    And stderr does not contain "Traceback"
    And the last stderr line matches "retry after \d+ seconds"

  Scenario Outline: Ctrl-C stops a wait, not the task
    Given I am logged in as admin
    And a task that keeps running
    When I run "<command>" and press Ctrl-C once it waits
    Then the exit code is 130
    And the last stderr line matches "interrupted; task {task_id} keeps running"
    And stderr does not contain "Traceback"
    And the task is not canceled

    Examples:
      | command                               |
      | cynork task result -w {task_id}       |
      | cynork task watch {task_id}           |
      | cynork -o json task logs -F {task_id} |

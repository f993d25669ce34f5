Feature: cynork, the CLI, against a real orchestrator
  The `cynork` binary runs as a subprocess with its own HOME, talking REST to a real
  `cynode-orchestrator serve` started by environment.py. Table output is key=value
  lines, JSON output one value; exit codes are upstream's (SPEC §5.3): 0 ok, 2 usage,
  3 auth, 4 not found, 5 conflict, 6 validation, 7 gateway or network, 8 internal.

  Background:
    Given a running orchestrator

  Scenario: status reports a healthy and ready gateway
    When I run "cynork status"
    Then the exit code is 0
    And stdout matches "^gateway=ok ready=ok "
    When I run "cynork -o json status"
    Then stdout is one JSON object with keys "gateway, ready"
    And the JSON field "gateway" is "ok"
    When I run "cynork status" against a closed port
    Then the exit code is 7
    And stdout contains "gateway=unreachable"
    And stderr is one line containing "cannot reach the gateway"

  Scenario: version is version=…, the gateway's beside it
    When I run "cynork version"
    Then the exit code is 0
    And stdout matches "^version=\S+ gateway_version=\S+$"
    When I run "cynork -o json version"
    Then stdout is one JSON object with keys "version, gateway_version"

  Scenario: log in, ask who I am, log out
    When I log in as admin
    Then the exit code is 0
    And stdout matches "^logged_in=true user=admin( |$)"
    And the config file holds tokens and has mode 0600
    When I run "cynork auth whoami"
    Then the exit code is 0
    And stdout matches "^id=\S+ user=admin( |$)"
    When I run "cynork -o json auth whoami"
    Then stdout is one JSON object with keys "id, user"
    And the JSON field "user" is "admin"
    When I run "cynork auth logout"
    Then the exit code is 0
    And stdout is exactly "logged_out=true\n"
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

  Scenario: an unreachable gateway is one line and exit 7
    Given I am logged in as admin
    When I run "cynork task list" against a closed port
    Then the exit code is 7
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
    And stdout matches "^id=\S+ user=admin"
    And the stored tokens were rotated

  Scenario: a usage error is one line and exit 2
    When I run "cynork task get"
    Then the exit code is 2
    And stderr is one line containing "Missing argument 'ID'."

  Scenario: throttled logins are one line with the wait and exit 7
    Given a gateway of its own that throttles after 2 failed logins
    When I log in as admin with a wrong password 2 times
    And I log in as admin
    Then the exit code is 7
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


  Scenario: login with -u/--user, a prompt for the user, and its usage errors
    When I run "cynork auth login" with stdin "admin\n{admin_password}\n"
    Then the exit code is 0
    And stderr contains "User: "
    And stdout matches "^logged_in=true user=admin"
    When I run "cynork -o json auth login --user admin --password-stdin" with stdin "{admin_password}\n"
    Then stdout is one compact JSON value
    And the JSON field "logged_in" is true
    And the JSON field "user" is "admin"
    When I run "cynork auth login --password-stdin" with stdin "{admin_password}\n"
    Then the exit code is 2
    And stderr is one line containing "--password-stdin needs -u/--user"
    When I run "cynork auth login -u admin --password secret"
    Then the exit code is 2
    And stderr is one line containing "No such option '--password'"

  Scenario: logout forgets the tokens even when the gateway cannot be reached
    Given I am logged in as admin
    When I run "cynork auth logout" against a closed port
    Then the exit code is 0
    And stdout is exactly "logged_out=true revoked=false\n"
    And stderr contains "did not revoke the session"
    And the config file holds no tokens
    When I run "cynork -o json auth logout"
    Then stdout is one JSON object with keys "logged_out"

  Scenario: delete refuses a running task, asks, then removes an ended one for good
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork task delete -y {task_id}"
    Then the exit code is 5
    And stderr is one line containing "cancel it before deleting it"
    When I run "cynork task cancel -y {task_id}"
    Then the exit code is 0
    When I run "cynork task delete {task_id}" answering "n"
    Then the exit code is 0
    And stdout is empty
    When I run "cynork task get {task_id}"
    Then the exit code is 0
    When I run "cynork -o json task delete -y {task_id}"
    Then the exit code is 0
    And the JSON field "deleted" is true
    And the JSON field "task_id" is "{task_id}"
    When I run "cynork task get {task_id}"
    Then the exit code is 4
    When I run "cynork task delete -y {task_id}"
    Then the exit code is 4

  Scenario: each exit code from a real gateway answer
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork task list --bogus"
    Then the exit code is 2
    When I run "cynork task get 01ARZ3NDEKTSV4RRFFQ69G5FAV"
    Then the exit code is 4
    When I run "cynork task cancel -y {task_id}"
    Then the exit code is 0
    When I run "cynork task cancel -y {task_id}"
    Then the exit code is 5
    And stderr is one line containing "conflict"
    When I run "cynork task create --command true --image 'not an image'"
    Then the exit code is 6
    And stderr is one line containing "refused the request"
    When I run "cynork task create --command true --name 01ARZ3NDEKTSV4RRFFQ69G5FAV"
    Then the exit code is 6
    When I run "cynork -c /proc/cynork-bdd/config.yaml auth login -u admin --password-stdin" with stdin "{admin_password}\n"
    Then the exit code is 8
    And stderr is one line containing "cynork: "
    Given I am not logged in anywhere
    When I run "cynork task list"
    Then the exit code is 3

  Scenario: global flags: -c, -o, -q and --no-color
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork -c .config/cynork/config.yaml -q --no-color -o json task get {task_id}"
    Then stdout is one compact JSON value
    And stderr does not contain "cynork"
    When I run "cynork -q task cancel {task_id}" answering "n"
    Then the exit code is 0
    And stdout is empty
    And stderr does not contain "left running"
    When I run "cynork task cancel {task_id}" answering "n"
    Then stderr contains "left running"

  Scenario: the short aliases of upstream's flags
    Given I am logged in as admin
    And a file "notes/a.txt" containing "hello"
    And a file "prompt.txt" containing "say hi"
    And a file "run.sh" containing "echo hi"
    When I run "cynork task create -t 'say hi' -a notes/a.txt"
    Then the exit code is 0
    When I run "cynork task create -f prompt.txt"
    Then the exit code is 0
    When I run "cynork task create -s run.sh"
    Then the exit code is 0
    When I run "cynork task create -p 'say hi'"
    Then the exit code is 0
    When I run "cynork task list -l 1"
    Then the exit code is 0
    And stdout contains "next_cursor="
    When I run "cynork task result -w --help"
    Then stdout contains "-w, --wait"
    When I run "cynork task logs --help"
    Then stdout contains "-F, --follow"
    When I run "cynork task cancel --help"
    Then stdout contains "-y, --yes"

  Scenario: attachments are sent by their relative path and listed by name
    Given I am logged in as admin
    And a file "notes/a.txt" containing "one"
    And a file "b.txt" containing "two"
    When I run "cynork task create --command 'cat a.txt b.txt' -a notes/a.txt -a ./b.txt --name files"
    Then the exit code is 0
    And stdout contains "attachments=notes/a.txt,b.txt"
    When I run "cynork -o json task get files"
    Then the JSON field "attachments" is ["notes/a.txt", "b.txt"]

  Scenario: task list --offset skips over cursor pages
    Given I am logged in as admin
    And 3 tasks that keep running
    When I run "cynork task list --offset 1 -l 1"
    Then the exit code is 0
    And stdout lists task 2 of those tasks, newest first, and nothing else

  Scenario: task watch refreshes every 2 s by default and at least every 1 s
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork task watch --help"
    Then stdout contains "[default: 2.0; x>=1.0]"
    When I run "cynork task watch -n 0.5 {task_id}"
    Then the exit code is 2
    And stderr is one line containing "0.5"

  @node
  Scenario: task logs shows both streams by default, and one when asked
    # The node has two slots; the scenarios' `sleep 300` tasks are canceled after each.
    Given I am logged in as admin
    When I run "cynork task create --name logs-both --command 'echo out-line; echo err-line >&2' --result"
    Then the exit code is 0
    When I run "cynork task logs logs-both"
    Then the exit code is 0
    And stdout is exactly "out-line\n"
    And stderr contains "err-line"
    When I run "cynork task logs --stream stderr logs-both"
    Then stdout is exactly "err-line\n"
    When I run "cynork -o json task logs logs-both"
    Then stdout is one JSON object with keys "task_id, task_name, stream, lines, stdout, stderr"
    And the JSON field "stream" is "all"
    And the JSON field "lines" is ["out-line", "err-line"]
    And the JSON field "stdout" is "out-line\n"
    When I run "cynork -o json task logs --stream stdout logs-both"
    Then the JSON field "lines" is ["out-line"]

  Scenario: shell -c runs one line and exits with its code
    Given I am logged in as admin
    And a task that keeps running
    When I run "cynork shell -c 'task list'"
    Then the exit code is 0
    And stdout contains "task_id={task_id}"
    When I run "cynork shell -c 'task get 01ARZ3NDEKTSV4RRFFQ69G5FAV'"
    Then the exit code is 4

  Scenario: the shell's prompt shows the user and the gateway host
    Given I am logged in as admin
    When I open the shell on a terminal and leave it
    Then the exit code is 0
    And stdout contains "cynork admin@{gateway_host}>"

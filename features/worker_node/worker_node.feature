Feature: Worker node runs jobs in sandboxes and reports readiness honestly
  A real `cynode-node run` process on real Podman, connected to a control plane.

  Scenario: A job runs in a sandbox with no network
    Given a control plane stand-in
    And a node connected to it
    When the control plane assigns job "NET1" running "ls /sys/class/net"
    Then job "NET1" completes with stdout "lo"
    When the control plane assigns job "NET2" running "curl -sS -m 3 http://1.1.1.1/ || echo unreachable"
    Then job "NET2" completes with stdout "unreachable"

  Scenario: A job that runs too long is stopped and fails with reason timeout
    Given a control plane stand-in
    And a node connected to it
    When the control plane assigns job "SLOW1" running "sleep 60" with a timeout of 2 seconds
    Then job "SLOW1" fails with reason "timeout"

  Scenario: Large output is cut at 262144 bytes and flagged
    Given a control plane stand-in
    And a node connected to it
    When the control plane assigns job "BIG1" running "head -c 400000 /dev/zero | tr '\0' x"
    Then job "BIG1" completes with 262144 bytes of stdout marked truncated

  Scenario: A request over 10 MiB to the worker API is refused with 413
    Given a control plane stand-in
    And a node connected to it
    When I send 11 MiB to the node's worker API
    Then the node answers 413

  Scenario: The node is ready only after its start-up checks
    Given a control plane stand-in that refuses registration
    And a node started against it
    Then readyz answers 503 naming step "register"
    And healthz answers "ok"
    When the control plane accepts registration
    Then readyz answers 200 "ready"

  Scenario: A missing sandbox image keeps the node unready and says how to fix it
    Given a control plane stand-in whose sandbox image is "localhost/cynode-missing-image"
    And a node started against it
    Then readyz answers 503 naming step "images"
    And the readyz answer mentions "make images"

  @orchestrator
  Scenario: A task created over REST runs in a real container on the node
    Given a running orchestrator with its control plane
    And a node registered with the orchestrator
    When the admin creates a task with commands "echo from-the-sandbox" over REST
    Then the task completes with stdout "from-the-sandbox"

  @orchestrator
  Scenario: Job artifacts are collected
    Given a running orchestrator with its control plane
    And a node registered with the orchestrator
    When the admin creates a task with commands "mkdir -p out/data && printf report > out/report.txt && printf 1,2 > out/data/a.csv && ln -s /etc/passwd out/passwd && echo made" over REST
    Then the task completes with stdout "made"
    And the task's artifacts are complete: "data/a.csv" of 3 bytes and "report.txt" of 6 bytes, nothing else
    And downloading "report.txt" gives "report"

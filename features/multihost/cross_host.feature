Feature: Tasks across real hosts
  The orchestrator and two nodes run as real processes on separate test hosts: network
  namespaces joined by veth pairs to one switch, addressed from 198.18.0.0/15 with no
  route off the machine. TLS on every link, mTLS between the nodes and the orchestrator.
  The hosts and their processes live for the whole feature and are removed after it,
  even when a step fails.

  Background:
    Given test hosts in network namespaces joined by veth pairs to one switch
      | host   | address    |
      | orch   | 198.18.0.1 |
      | node-a | 198.18.0.2 |
      | node-b | 198.18.0.3 |
      | client | 198.18.0.9 |
    And the orchestrator and two nodes running on them

  Scenario: A task created on the client host runs on a node host over TLS
    Given a capture on the links of the client, the orchestrator and both node hosts
    When I log in from the client host and create a task "echo $MARKER"
    Then the task completes with stdout "$MARKER" on one of the node hosts
    And the capture shows no password, PSK or token in clear

  Scenario: A node cut off for less than a lease delivers its result once
    When I log in from the client host and create a task "sleep 2" then "echo short-cut"
    And the task is running on one of the node hosts
    And that node host's link is cut for half a lease and then restored
    Then the task completes with stdout "short-cut" on that same node host
    And exactly one completed attempt of the task's job is stored

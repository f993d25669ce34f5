Feature: Node registration with the pre-shared key
  Worker nodes join the orchestrator over the control plane with a pre-shared key and get
  a node JWT and a bootstrap payload back.

  Scenario: A node registers with the right pre-shared key
    When node "bdd-reg-1" registers with the correct pre-shared key
    Then the control plane answers 200
    And the bootstrap payload has version 1, the orchestrator endpoints and a node JWT
    And the bootstrap's initial_config_version is a ULID

  Scenario: A node with a wrong pre-shared key is refused
    When node "bdd-reg-2" registers with the pre-shared key "not-the-key"
    Then the control plane answers 401 with a problem that does not contain "not-the-key"

  Scenario: The same node slug again is the same node
    When node "bdd-reg-3" registers with the correct pre-shared key
    And node "bdd-reg-3" registers with the correct pre-shared key
    Then both registrations name the same node id

  Scenario: An upstream-shaped capability report, sent as the body itself, round-trips
    Given node "bdd-cap-1" has registered with the correct pre-shared key
    When node "bdd-cap-1" reports an upstream-shaped capability report as the body
    Then the control plane answers 200
    And GET /v1/nodes shows node "bdd-cap-1" with exactly the report it sent

  Scenario: The report wrapped in "capability" is accepted as well
    Given node "bdd-cap-2" has registered with the correct pre-shared key
    When node "bdd-cap-2" reports a capability report wrapped in "capability"
    Then the control plane answers 200
    And GET /v1/nodes shows node "bdd-cap-2" with exactly the report it sent

  Scenario: A body that is neither form, or both, is 400 and stores nothing
    Given node "bdd-cap-3" has registered with the correct pre-shared key
    When the node reports a body that is neither form
    Then the control plane answers 400
    When the node reports a body with the report both wrapped and inline
    Then the control plane answers 400
    And GET /v1/nodes still shows node "bdd-cap-3" with the report it registered with

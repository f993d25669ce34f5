Feature: Orchestrator start-up and readiness
  The orchestrator answers health at once, and claims readiness only when it can do
  useful work: database reachable, schema current, and an inference path present.

  Scenario: Healthy but not ready without an inference path
    When I GET "/healthz"
    Then the response status is 200
    And the response text is "ok"
    When I GET "/readyz"
    Then the response status is 503
    And the response text contains "missing: inference path"
    And the response text does not contain "database"

  Scenario: A sandbox-only deployment is ready and says so
    Given a second orchestrator with CYNODE_REQUIRE_INFERENCE set to "false"
    When I GET "/readyz"
    Then the response status is 200
    And the response text starts with "ready"
    And the response text contains "not required"

  Scenario: Start-up refuses without an admin password outside dev mode
    When I run "cynode-orchestrator serve" without ADMIN_PASSWORD
    Then the command exits with 2
    And its error output contains "ADMIN_PASSWORD is not set"

  Scenario: Metrics are exposed
    When I GET "/healthz"
    And I GET "/metrics"
    Then the response status is 200
    And the response text contains "cynode_gateway_requests_total"
    And the response text contains "cynode_tasks"

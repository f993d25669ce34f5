Feature: Node configuration delivery and acknowledgement
  A registered node fetches its configuration, stamped with a ULID config_version, and
  acknowledges it.

  Background:
    Given node "bdd-cfg-1" has registered with the correct pre-shared key

  Scenario: Configuration with a ULID version, then its acknowledgement
    When the node fetches its configuration
    Then the control plane answers 200
    And the configuration has version 1 and a ULID config_version equal to the initial one
    And the configuration has the sandbox defaults
    When the node acknowledges that configuration as "applied"
    Then the control plane answers 200
    And the acknowledgement is accepted
    When the node fetches its configuration
    Then the config_version has not changed

  Scenario: A failed application is acknowledged too
    When the node fetches its configuration
    And the node reports that configuration failed with error "image missing"
    Then the control plane answers 200

  Scenario: Acknowledging an unknown configuration version
    When the node acknowledges config version "01J00000000000000000000000" as "applied"
    Then the control plane answers 404

  Scenario: The configuration needs the node token
    When the configuration is fetched without a token
    Then the control plane answers 401

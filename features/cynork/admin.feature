Feature: Administration with cynork
  Administrators manage users and take nodes out of service through the gateway; no
  shell on the database host. Everyone else is refused (exit 3).

  Scenario: an admin creates a user, disables, enables and resets them
    Given I am logged in as admin
    When I run "cynork users create carol --email carol@example.org --password-stdin" with stdin "carol password 1\n"
    Then the exit code is 0
    And stdout contains "handle=carol"
    When I run "cynork -c carol.yaml auth login -u carol --password-stdin" with stdin "carol password 1\n"
    Then the exit code is 0
    When I run "cynork -c carol.yaml users list"
    Then the exit code is 3
    And stderr is one line containing "forbidden"
    When I run "cynork users disable carol" answering "n"
    Then the exit code is 0
    When I run "cynork -c carol.yaml auth whoami"
    Then the exit code is 0
    When I run "cynork users disable carol -y"
    Then the exit code is 0
    And stdout contains "disabled=true"
    When I run "cynork -c carol.yaml auth whoami"
    Then the exit code is 3
    When I run "cynork -c carol.yaml auth login -u carol --password-stdin" with stdin "carol password 1\n"
    Then the exit code is 3
    When I run "cynork users enable carol"
    Then the exit code is 0
    When I run "cynork users reset-password carol -y --password-stdin" with stdin "carol password 2\n"
    Then the exit code is 0
    When I run "cynork -c carol.yaml auth login -u carol --password-stdin" with stdin "carol password 2\n"
    Then the exit code is 0
    When I run "cynork -o json users get carol"
    Then the JSON field "is_active" is true
    When I run "cynork -o json audit list --handle carol --action login --outcome failure"
    Then the exit code is 0
    And stdout contains "disabled"

  @node
  Scenario: drain a node, and a new task waits; enable it, and the task runs
    Given I am logged in as admin
    And the node is put back in service after this scenario
    When I run "cynork -o json nodes drain bdd-cynork-node -y"
    Then the exit code is 0
    And the JSON field "drained" is true
    When I run "cynork -o json nodes get bdd-cynork-node"
    Then the JSON field "status" is "draining"
    When I run "cynork task create --name after-drain --command 'echo after-drain'"
    Then the exit code is 0
    Given 2 seconds have passed
    When I run "cynork task get after-drain"
    Then stdout contains "status=queued"
    When I run "cynork nodes enable bdd-cynork-node"
    Then the exit code is 0
    When I run "cynork task result -w after-drain"
    Then the exit code is 0
    And stdout contains "status=completed"
    And stdout contains "after-drain"
    When I run "cynork -o json nodes get bdd-cynork-node"
    Then the JSON field "status" is "online"

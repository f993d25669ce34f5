Feature: Fair share and quotas
  Free slots go round-robin across the users with queued work, so one user's backlog
  never holds another's next task for long; quotas bound what one user may queue.

  Scenario: a newcomer's task runs next, not after another user's backlog
    # Today's oldest-first order would run it after all 16 of A's tasks: about 16 s of
    # sleep on two slots, plus their start-ups.
    Given a fleet of its own: an orchestrator and a node with 2 slots
    And users "fair-a" and "fair-b" on it
    When "fair-a" queues 16 tasks that each sleep 2 seconds
    And once 2 of them run, "fair-b" creates one task
    Then that task completes within 12 seconds, while at least 8 of "fair-a"'s tasks are still queued

  Scenario: past the queued-task quota a create answers 429, and earlier tasks stay
    Given a user "quota-bdd" with password "quota password 1"
    When as admin I set the quotas of "quota-bdd" to {"max_queued_tasks": 2}
    Given I am logged in as "quota-bdd" with password "quota password 1"
    When I create a task with body:
      """
      {"commands": ["echo one"]}
      """
    Then the response status is 201
    When I create a task with body:
      """
      {"commands": ["echo two"]}
      """
    Then the response status is 201
    When I create a task with body:
      """
      {"commands": ["echo three"]}
      """
    Then the response status is 429
    And the response is problem JSON
    And the response has a Retry-After header
    And the JSON field "type" is "urn:cynode:problem:resource-exhausted"
    And my earlier tasks are all still queued
    When I ask who I am
    Then the response status is 200
    And the JSON field "limits.max_queued_tasks" is 2
    And the JSON field "usage.queued_tasks" is 2

  Scenario: a timeout over the user's limit is refused without Retry-After
    Given a user "quota-bdd-2" with password "quota password 2"
    When as admin I set the quotas of "quota-bdd-2" to {"max_task_timeout_seconds": 30}
    Given I am logged in as "quota-bdd-2" with password "quota password 2"
    When I create a task with body:
      """
      {"commands": ["echo long"], "timeout_seconds": 31}
      """
    Then the response status is 429
    And the response is problem JSON
    And the response text contains "over your limit of 30 s"

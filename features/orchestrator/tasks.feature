Feature: Task lifecycle through the user gateway
  Tasks are created in one of three input modes, read back by id or name, listed
  newest first, and canceled; users see only their own tasks.

  Background:
    Given I am logged in as "admin"

  Scenario Outline: Create a task in each input mode
    When I create a task with body:
      """
      <body>
      """
    Then the response status is 201
    And the JSON field "status" is "queued"
    When I get the task
    Then the response is the task object itself
    And the JSON field "input_mode" is "<mode>"
    And the JSON field "status" is "queued"

    Examples:
      | mode     | body                                                           |
      | prompt   | {"prompt": "What is 2+2?"}                                      |
      | script   | {"input_mode": "script", "script": "#!/bin/sh\necho hi"}        |
      | commands | {"input_mode": "commands", "commands": ["echo a", "echo b"]}   |

  Scenario: Names are unique per user and usable as ids
    When I create a task with body:
      """
      {"prompt": "one", "task_name": "nightly"}
      """
    And I create a task with body:
      """
      {"prompt": "two", "task_name": "nightly"}
      """
    Then the JSON field "task_name" is "nightly-2"
    When I GET "/v1/tasks/nightly-2" with my token
    Then the response status is 200
    And the JSON field "task_name" is "nightly-2"

  Scenario: Malformed and oversized requests
    When I create a task with body:
      """
      {"prompt": "a", "script": "b"}
      """
    Then the response status is 400
    And the response is problem JSON
    When I create a task with a prompt of 1048577 bytes
    Then the response status is 413

  Scenario: Attachment names as given, and the logs of both streams
    When I create a task with body:
      """
      {"commands": ["cat a.txt"], "task_name": "with-files", "attachments": [{"name": "notes/a.txt", "content": "aGk="}, {"name": "b.txt", "content": "aGk="}]}
      """
    Then the response status is 201
    And the JSON field "attachments" is ["notes/a.txt", "b.txt"]
    When I GET "/v1/tasks/with-files" with my token
    Then the response status is 200
    And the JSON field "attachments" is ["notes/a.txt", "b.txt"]
    When I GET "/v1/tasks/with-files/logs?stream=all" with my token
    Then the response status is 200
    And the JSON field "task_name" is "with-files"
    And the JSON field "stream" is "all"
    And the JSON field "lines" is []
    And the JSON field "stdout" is ""
    And the JSON field "stderr" is ""
    When I GET "/v1/tasks/with-files/logs?stream=stdout" with my token
    Then the response status is 200
    And the response text does not contain "stderr"
    When I GET "/v1/tasks/with-files/logs?stream=both" with my token
    Then the response status is 400
    And the response is problem JSON

  Scenario: An attachment path that climbs out is refused
    When I create a task with body:
      """
      {"commands": ["true"], "attachments": [{"name": "../etc/passwd", "content": "aGk="}]}
      """
    Then the response status is 400
    And the response is problem JSON

  Scenario: List newest first with a cursor
    When I create 3 prompt tasks
    And I list tasks with limit 2
    Then the response status is 200
    And the list holds 2 tasks, the newest first
    And the list has a next cursor

  Scenario: Cancel a queued task, and a canceled one again
    When I create a task with body:
      """
      {"prompt": "cancel me"}
      """
    And I cancel the task
    Then the response status is 200
    And the JSON field "canceled" is true
    When I get the task
    Then the JSON field "status" is "canceled"
    When I cancel the task
    Then the response status is 409

  Scenario: Another user's task is not found
    When I create a task with body:
      """
      {"prompt": "private"}
      """
    Given a user "bdd-bob" with password "bob password 12"
    And I am logged in as "bdd-bob" with password "bob password 12"
    When I get the task
    Then the response status is 404

  Scenario: The same operations over gRPC with a generated stub
    When I log in over gRPC as "admin" with the admin password
    And I refresh the tokens over gRPC
    Then over gRPC I am "admin"
    And over gRPC the previous refresh token is refused
    When I log in over gRPC as "admin" with the admin password
    And I create a commands task over gRPC
    Then the gRPC task status is "queued"
    And I can read the task back over gRPC
    And the task is in my task list over gRPC
    When I cancel the task over gRPC
    Then cancelling it again over gRPC is refused with FAILED_PRECONDITION
    When I log out over gRPC
    Then over gRPC my access token is refused

  Scenario: The same operations with plain curl
    When I log in with curl as "admin" with the admin password
    Then curl printed HTTP status 200
    When I refresh the tokens with curl
    Then curl printed HTTP status 200
    When I ask who I am with curl
    Then curl printed HTTP status 200
    And curl printed the JSON field "handle" as "admin"
    When I create a prompt task with curl
    Then curl printed HTTP status 201
    When I get the task with curl
    Then curl printed HTTP status 200
    When I list my tasks with curl
    Then curl printed HTTP status 200
    And curl's task list holds the task
    When I cancel the task with curl
    Then curl printed HTTP status 200
    When I cancel the task with curl
    Then curl printed HTTP status 409
    And curl printed problem JSON
    When I log out with curl
    Then curl printed HTTP status 204
    When I ask who I am with curl
    Then curl printed HTTP status 401

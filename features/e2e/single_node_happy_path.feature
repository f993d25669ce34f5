@suite_e2e
Feature: Single-node happy path, end to end
  A real orchestrator on Postgres, one real node on Podman and a real (small) model.
  Everything a user does goes through cynork; checks read the REST surface.

  Background:
    Given I am logged in as admin with cynork

  Scenario: Single-node task execution
    Then the node is registered, online, and has acknowledged its config
    When I create a task with cynork running the command "echo e2e-happy-path; id -u"
    Then the task is dispatched to that node
    And the task completes with stdout containing "e2e-happy-path"
    And cynork task result shows status "completed"

  @inference
  Scenario: Single-node task execution with inference in sandbox
    Then the node is registered with inference and has acknowledged its config
    When I create a task with cynork whose command calls the model at $OLLAMA_BASE_URL
    Then the task is dispatched to that node
    And the task completes with stdout containing "model-done=True"

  @inference
  Scenario: A prompt is answered by the model from inside the sandbox
    When I create a task with cynork from the prompt "Name one colour."
    Then the task completes with a non-empty reply from the model

  Scenario: Cancel a running task
    When I create a task with cynork running the command "echo started; sleep 120"
    And the task is running
    And I cancel the task with cynork
    Then the task ends with status "canceled" within 30 seconds
    And no container of the task is left running

  Scenario: A task that outruns its timeout fails with reason timeout
    When I create a task with cynork running the command "sleep 60" with a timeout of 2 seconds
    Then the task ends with status "failed" within 60 seconds
    And the task's reason is "timeout"

  Scenario: Artifacts download
    When I create a task with cynork running the command "mkdir -p out/sub && head -c 3000000 /dev/urandom > out/data.bin && echo hello > out/sub/hi.txt && sha256sum out/data.bin"
    Then the task completes with stdout containing "out/data.bin"
    And cynork task artifacts list shows "data.bin" and "sub/hi.txt" once they are complete
    And cynork task artifacts get saves "data.bin" with the sha256 the job printed
    And cynork task artifacts get --all saves both files under one directory

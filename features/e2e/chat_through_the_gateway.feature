@suite_e2e @inference
Feature: Chat through the gateway
  The models on the node, reached through the orchestrator's OpenAI-compatible door:
  the request travels down the node's own inference link to its model, and the answer
  streams back. Users chat with cynork; any OpenAI client works the same way.

  Background:
    Given I am logged in as admin with cynork

  Scenario: Chat through the gateway
    Then cynork models list shows the node's model
    When I ask with cynork chat "Name one colour."
    Then the answer is not empty
    And the answer as JSON is a chat completion with usage
    And my token usage for the model is recorded

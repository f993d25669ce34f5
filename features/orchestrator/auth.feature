Feature: Login, refresh, logout and whoami
  Local accounts with short-lived access tokens and rotating refresh tokens.

  Scenario: The bootstrap admin logs in and asks who it is
    When I log in as "admin" with the admin password
    Then the response status is 200
    And the JSON field "token_type" is "Bearer"
    And the JSON field "expires_in" is 900
    When I ask who I am
    Then the response status is 200
    And the JSON field "handle" is "admin"
    And the JSON field "is_active" is true

  Scenario: Wrong password and unknown user get the same answer
    Given a user "bdd-alice" with password "alice password 1"
    When I log in as "bdd-alice" with password "wrong password"
    Then the response status is 401
    And I remember the response body
    When I log in as "nobody-here" with password "wrong password"
    Then the response status is 401
    And the response body is the one I remembered

  Scenario: Refresh rotates, and reusing the old refresh token revokes the session
    When I log in as "admin" with the admin password
    And I refresh the tokens
    Then the response status is 200
    And the refresh token changed
    When I refresh with the previous refresh token
    Then the response status is 401
    When I refresh the tokens
    Then the response status is 401
    When I ask who I am
    Then the response status is 401

  Scenario: Logout revokes the session
    When I log in as "admin" with the admin password
    And I log out
    Then the response status is 204
    When I ask who I am
    Then the response status is 401
    And the response is problem JSON

  Scenario: No token, no access
    When I GET "/v1/users/me"
    Then the response status is 401
    And the response is problem JSON

  Scenario: Repeated failures are throttled
    Given a second orchestrator with CYNODE_LOGIN_MAX_FAILURES set to "3"
    When I log in as "admin" with password "wrong password" 3 times
    And I log in as "admin" with the admin password
    Then the response status is 429
    And the response has a Retry-After header

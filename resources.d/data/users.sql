CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, team TEXT NOT NULL);
INSERT INTO users (id, name, email, team) VALUES
  (1, 'Ada Lovelace', 'ada@example.com', 'research'),
  (2, 'Alan Turing', 'alan@example.com', 'research'),
  (3, 'Grace Hopper', 'grace@example.com', 'platform'),
  (42, 'Douglas Adams', 'douglas@example.com', 'platform');

-- tests/audit/test_record_form.py builds audit.db from this dump (a repository carries no database file).
PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY,   -- 1, 2, 3 ...
    time       REAL NOT NULL,
    time_iso   TEXT NOT NULL,
    seq        INTEGER NOT NULL,      -- the head at that moment (0: empty log)
    head_hash  TEXT NOT NULL,         -- the hash of the record at seq
    reason     TEXT NOT NULL,         -- 'open' | 'periodic' | 'shutdown'
    prev_mac   TEXT NOT NULL,         -- the previous checkpoint's mac (chain)
    mac        TEXT NOT NULL          -- HMAC-SHA256 under the key outside this database
);
INSERT INTO "audit_checkpoints" VALUES(1,1.79602868659550189969e+09,'2026-11-30T08:51:26.595502Z',0,'0000000000000000000000000000000000000000000000000000000000000000','open','0000000000000000000000000000000000000000000000000000000000000000','1ac963ad399666f327ccf46e838ecb6adb03c7c177defd58a83189310a66b85b');
INSERT INTO "audit_checkpoints" VALUES(2,1796028686.60289,'2026-11-30T08:51:26.602890Z',8,'e1e9f8456c8a57d55af4830ff49902e9add933d61e5e407bab18b75b245e1704','shutdown','1ac963ad399666f327ccf46e838ecb6adb03c7c177defd58a83189310a66b85b','f6a912b44394c11c87fe1fa579278a44fddd3b3881bcff6c8be12fd879b6c6fe');
CREATE TABLE audit_records (
    seq              INTEGER PRIMARY KEY,   -- 1, 2, 3 ... no gaps; hashed
    version          INTEGER NOT NULL,      -- record format (FORMAT_VERSION)
    time             REAL NOT NULL,         -- UTC epoch seconds, microsecond precision
    time_iso         TEXT NOT NULL,         -- the same instant, 2025-01-31T12:00:00.123456Z
    kind             TEXT NOT NULL,
    subject          TEXT,
    session_id       TEXT,
    agent            TEXT,
    action           TEXT,
    target           TEXT,
    arguments        TEXT,                  -- canonical JSON, secret fields redacted
    arguments_digest TEXT,                  -- keyed digest (HMAC) of the UNredacted canonical arguments
    decision         TEXT,                  -- canonical JSON {effect, rule_ids}
    decided_by       TEXT,                  -- 'rule' | 'person'
    approver         TEXT,                  -- the person's sub
    outcome          TEXT,
    duration_ms      REAL,
    policy_revision  TEXT,
    details          TEXT NOT NULL,         -- canonical JSON object
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL
);
INSERT INTO "audit_records" VALUES(1,1,1796028686.59711,'2026-11-30T08:51:26.597110Z','execution','alice','s0','assistant','tool.call','shell','{"n":0,"path":"/tmp/f0","token":"[redacted]"}','hmac-sha256:82f745f05000156c70832f9a86bf4a122e59cb637756d7eb5f33ced315d4b92b','{"effect":"allow","rule_ids":["r-base"]}','rule',NULL,'ok',0.0,'rev-1','{"i":0}','0000000000000000000000000000000000000000000000000000000000000000','5e10fb8aa3ad6f8d895844d7ba50c13e8630b9cb7433fa1baba53a9f6a8f5bc6');
INSERT INTO "audit_records" VALUES(2,1,1.79602868659794592852e+09,'2026-11-30T08:51:26.597946Z','execution','bob','s1','assistant','tool.call','read_file','{"n":1,"path":"/tmp/f1","token":"[redacted]"}','hmac-sha256:110c8a1a0a37a5536e85099a753c602a8271d0980f157ce89a0d9da973b9be51','{"effect":"allow","rule_ids":["r-base"]}','rule',NULL,'error',1.5,'rev-1','{"i":1}','5e10fb8aa3ad6f8d895844d7ba50c13e8630b9cb7433fa1baba53a9f6a8f5bc6','cc9e0148713f3410368b3994fe3c7db747db29fbb295ebd94f415265cf169cbc');
INSERT INTO "audit_records" VALUES(3,1,1796028686.59881,'2026-11-30T08:51:26.598810Z','execution','carol','s2','assistant','tool.call','send_payment','{"n":2,"path":"/tmp/f2","token":"[redacted]"}','hmac-sha256:0483ef533a427e6276df3cb21644012d7b0a374b8d02c5ce890f6a200f9c3bab','{"effect":"allow","rule_ids":["r-base"]}','rule',NULL,'denied',3.0,'rev-1','{"i":2}','cc9e0148713f3410368b3994fe3c7db747db29fbb295ebd94f415265cf169cbc','783b82d225997aa137ef6d9e0378e15697cda56289048efee9973ba8c2a468e5');
INSERT INTO "audit_records" VALUES(4,1,1.79602868659953188897e+09,'2026-11-30T08:51:26.599532Z','execution','alice','s3','assistant','tool.call','shell','{"n":3,"path":"/tmp/f3","token":"[redacted]"}','hmac-sha256:d3aa9d4f10dae3d85c165c67bb616b2d702a7aa8011fade3947bc9ac99714421','{"effect":"allow","rule_ids":["r-base"]}','rule',NULL,'ok',4.5,'rev-1','{"i":3}','783b82d225997aa137ef6d9e0378e15697cda56289048efee9973ba8c2a468e5','fd9a3a3248ac5b9c3adc964653e4f9402f4fdebebaefabc88b9968f73534aeb4');
INSERT INTO "audit_records" VALUES(5,1,1.79602868660020399097e+09,'2026-11-30T08:51:26.600204Z','execution','bob','s0','assistant','tool.call','read_file','{"n":4,"path":"/tmp/f4","token":"[redacted]"}','hmac-sha256:5fb21756372323c53f698e7d857a5eccfa35d171c8d693554bddf7c5b56f49f3','{"effect":"allow","rule_ids":["r-base"]}','rule',NULL,'error',6.0,'rev-1','{"i":4}','fd9a3a3248ac5b9c3adc964653e4f9402f4fdebebaefabc88b9968f73534aeb4','ebaf648e9aa7e31985895c3740814fdb91c84827780450fb470bad98ab92b992');
INSERT INTO "audit_records" VALUES(6,1,1.79602868660084199906e+09,'2026-11-30T08:51:26.600842Z','execution','carol','s1','assistant','tool.call','send_payment','{"n":5,"path":"/tmp/f5","token":"[redacted]"}','hmac-sha256:a5823213f6622d5207672251e95250d8ecf1f7c0fdd62ecc2eab4ba23d426243','{"effect":"allow","rule_ids":["r-base"]}','rule',NULL,'denied',7.5,'rev-1','{"i":5}','ebaf648e9aa7e31985895c3740814fdb91c84827780450fb470bad98ab92b992','4287e1bb23416c81c707ebed975aebe3eb2a0f0db05376003f8990dcb6fd37cb');
INSERT INTO "audit_records" VALUES(7,1,1.79602868660147809982e+09,'2026-11-30T08:51:26.601478Z','decision','alice','s2','assistant','tool.call','shell',NULL,NULL,'{"effect":"allow","rule_ids":["r-base"]}','rule',NULL,'require_approval',9.0,'rev-1','{"approver":"self","reason":"level 1 asks the caller"}','4287e1bb23416c81c707ebed975aebe3eb2a0f0db05376003f8990dcb6fd37cb','9bfc59e95738086907eb80aab4c118d4d6867436b9a98b546b11bdd87ac599b8');
INSERT INTO "audit_records" VALUES(8,1,1.79602868660213899607e+09,'2026-11-30T08:51:26.602139Z','approval','bob','s3','assistant','tool.call','read_file','{"n":7,"path":"/tmp/f7","token":"[redacted]"}','hmac-sha256:daa6475c190dc154dd62c97e7072806ae466325dda96776b063e90e463fc197c','{"effect":"allow","rule_ids":["r-base"]}','person','alice','approved',NULL,'rev-1','{"i":7}','9bfc59e95738086907eb80aab4c118d4d6867436b9a98b546b11bdd87ac599b8','e1e9f8456c8a57d55af4830ff49902e9add933d61e5e407bab18b75b245e1704');
CREATE INDEX audit_records_by_time ON audit_records (time);
CREATE INDEX audit_records_by_subject ON audit_records (subject, time);
CREATE INDEX audit_records_by_target ON audit_records (target, time);
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: UPDATE refused'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: DELETE refused'); END;
COMMIT;

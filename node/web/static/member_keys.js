// Members' own ballot keys (docs/protocol.md §5.5, §7.5). Progressive enhancement:
// without this file, or without Ed25519 in WebCrypto, ballots are recorded custodially.
//
// The key is made by WebCrypto as non-extractable and kept in IndexedDB, so its
// secret half never leaves this browser, not even to this page's own script. Only the
// public half is sent to the node, which registers it as a chain entry. A ballot is
// signed over the RFC 8785 form of {ballot, counter, member, proposal, type}; the
// node and every auditor check that signature with the same rule
// (protocol/member_ballots.py).
"use strict";

(function () {
  var DB = "convene-member-keys";
  var STORE = "keys";
  var B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

  function b58encode(bytes) {
    var zeros = 0;
    while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
    var n = 0n;
    for (var i = 0; i < bytes.length; i++) n = (n << 8n) | BigInt(bytes[i]);
    var out = "";
    while (n > 0n) { out = B58[Number(n % 58n)] + out; n = n / 58n; }
    return "1".repeat(zeros) + out;
  }

  // RFC 8785 for the values a ballot holds (strings, whole numbers, arrays, objects):
  // keys sorted by UTF-16 code units (JavaScript's own string order), and
  // JSON.stringify's string and number forms, which RFC 8785 adopts.
  function canonical(value) {
    if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
    if (value !== null && typeof value === "object") {
      return "{" + Object.keys(value).sort().map(function (k) {
        return JSON.stringify(k) + ":" + canonical(value[k]);
      }).join(",") + "}";
    }
    return JSON.stringify(value);
  }

  function openDb() {
    return new Promise(function (resolve, reject) {
      var req = indexedDB.open(DB, 1);
      req.onupgradeneeded = function () { req.result.createObjectStore(STORE); };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  // Resolves when the transaction has committed, not merely when the request ran:
  // a page that reloads right after storing a key must find it there.
  function idb(mode, act) {
    return openDb().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(STORE, mode);
        var req = act(tx.objectStore(STORE));
        tx.oncomplete = function () { db.close(); resolve(req.result); };
        tx.onerror = tx.onabort = function () { db.close(); reject(tx.error || req.error); };
      });
    });
  }

  function slot(member) { return location.origin + " " + member; }
  function stored(member) { return idb("readonly", function (s) { return s.get(slot(member)); }); }
  function store(member, rec) { return idb("readwrite", function (s) { return s.put(rec, slot(member)); }); }

  function makeKey() {
    return crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])
      .then(function (pair) {
        return crypto.subtle.exportKey("raw", pair.publicKey).then(function (raw) {
          var bytes = new Uint8Array(2 + raw.byteLength);
          bytes.set([0xed, 0x01]);
          bytes.set(new Uint8Array(raw), 2);
          return { privateKey: pair.privateKey, key: "z" + b58encode(bytes) };
        });
      });
  }

  function register(key, csrf) {
    var body = new URLSearchParams({ csrf: csrf, key: key, label: navigator.platform || "browser" });
    return fetch("/account/keys", { method: "POST", body: body, credentials: "same-origin" })
      .then(function (res) { if (!res.ok) throw new Error("the node refused the key (" + res.status + ")"); });
  }

  function words(text) { return (text || "").split(" ").filter(Boolean); }

  // This device's registered key for `member`: the stored one if the node lists it;
  // otherwise (first visit, or the old key was revoked) a new key, registered.
  function ensureKey(el, csrf) {
    var member = el.dataset.member;
    var current = words(el.dataset.keys);
    return stored(member).then(function (rec) {
      if (rec && current.indexOf(rec.key) >= 0) return rec;
      return makeKey().then(function (made) {
        return store(member, made).then(function () { return register(made.key, csrf); })
          .then(function () { el.dataset.keys = (el.dataset.keys + " " + made.key).trim(); return made; });
      });
    });
  }

  function supported() {
    return Boolean(window.crypto && crypto.subtle && window.indexedDB && window.BigInt);
  }

  // The ballot in the JSON API's shape, from the form as ballot_form.py reads it.
  function ballotOf(form) {
    var method = form.dataset.method;
    var options = JSON.parse(form.dataset.options || "[]");
    var checked = function (name) {
      return Array.prototype.filter.call(form.querySelectorAll("input[name='" + name + "']"),
        function (i) { return i.checked; }).map(function (i) { return i.value; });
    };
    if (method === "consent" || method === "choice") {
      var one = checked("choice");
      return one.length ? { choice: one[0] } : null;
    }
    if (method === "approval") return { choices: checked("choices") };
    var field = function (name) { var f = form.elements[name]; return f ? f.value.trim() : ""; };
    if (method === "ranked") {
      var placed = {};
      for (var i = 0; i < options.length; i++) {
        var pos = field("rank-" + i);
        if (!pos) continue;
        if (!/^[0-9]+$/.test(pos) || placed[pos] !== undefined) return null;
        placed[pos] = options[i];
      }
      var order = Object.keys(placed).map(Number).sort(function (a, b) { return a - b; });
      return order.length ? { ranking: order.map(function (p) { return placed[p]; }) } : null;
    }
    var scores = {};
    options.forEach(function (o, j) { var v = field("score-" + j); if (v !== "") scores[o] = Number(v); });
    return Object.keys(scores).length ? { scores: scores } : null;
  }

  function signBallot(privateKey, key, proposal, member, counter, ballot) {
    var payload = canonical({ ballot: ballot, counter: counter, member: member, proposal: proposal, type: "MemberBallot" });
    return crypto.subtle.sign({ name: "Ed25519" }, privateKey, new TextEncoder().encode(payload))
      .then(function (sig) {
        return { proposal: proposal, member: member, counter: counter, ballot: ballot, key: key,
                 signature: "z" + b58encode(new Uint8Array(sig)) };
      });
  }

  function say(el, text) { if (el) el.textContent = text; }

  function ballotForm(form) {
    var status = document.getElementById("signing-status");
    var csrf = form.elements.csrf.value;
    var ready = supported() ? ensureKey(form, csrf) : Promise.reject(new Error("no Ed25519"));
    ready.then(function (rec) {
      say(status, "Your vote will be signed with this device's key (" + rec.key.slice(0, 12) + "…): the node can count it but not change it.");
    }, function () {
      say(status, "This browser cannot sign your vote; the node will record it for you (custodial).");
    });
    form.addEventListener("submit", function (event) {
      if (form.dataset.signed === "1") return;
      var ballot = ballotOf(form);
      if (!ballot) return; // let the node say what is missing in the form
      event.preventDefault();
      ready.then(function (rec) {
        return signBallot(rec.privateKey, rec.key, form.dataset.proposal, form.dataset.member,
          Number(form.dataset.nextCounter), ballot);
      }).then(function (signed) {
        form.elements.signed_ballot.value = JSON.stringify(signed);
      }, function () {
        form.elements.signed_ballot.value = ""; // custodial, as without JavaScript
      }).then(function () { form.dataset.signed = "1"; form.submit(); });
    });
  }

  function keysPage(el) {
    var status = document.getElementById("device-key");
    var form = document.getElementById("register-key");
    if (!supported()) { say(status, "This browser cannot make an Ed25519 key; your ballots are recorded custodially."); return; }
    var member = el.dataset.member;
    stored(member).then(function (rec) {
      if (rec && words(el.dataset.keys).indexOf(rec.key) >= 0) {
        say(status, "This device signs your ballots with key " + rec.key + ".");
        el.dataset.deviceKey = rec.key;
        return;
      }
      // first visit, or this device's key was revoked: make and register a new one
      say(status, "Making a key on this device…");
      return ensureKey(el, form.elements.csrf.value).then(function () { location.reload(); });
    }).catch(function (err) { say(status, "Could not make a key: " + err.message); form.hidden = false; });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      makeKey().then(function (made) {
        return store(member, made).then(function () { return register(made.key, form.elements.csrf.value); });
      }).then(function () { location.reload(); }, function (err) { say(status, "Could not make a key: " + err.message); });
    });
  }

  document.querySelectorAll("form[data-sign-ballot]").forEach(ballotForm);
  document.querySelectorAll("[data-member-keys]").forEach(keysPage);
  // for the browser tests and curious members: the same functions the page uses
  window.conveneKeys = { canonical: canonical, b58encode: b58encode, stored: stored, signBallot: signBallot };
})();

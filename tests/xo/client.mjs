// Drive cxapi with Xen Orchestra's real connector, npm `xen-api` (pinned in
// package.json), the way xo-server uses it.  Run by tests/integration/test_xo.py.
//
//   node client.mjs --url=http://127.0.0.1:PORT --user=root --password=PW
//                   [--transport=auto|json-rpc|xml-rpc] [--allow-unauthorized]
//                   [--proxy=record|old-host] --steps=connect,calls,cache,...
//
// Every step prints one JSON line on stdout: {"step": NAME, "ok": true, ...} or
// {"step": NAME, "ok": false, "error": ...}; the first failing step ends the
// run (exit 1).  A step that needs another client to act prints
// {"ask": ACTION, ...} and waits for one JSON line on stdin (the test does the
// action with its own client, then answers {"ok": true, ...}).
//
// --proxy puts a small HTTP proxy of our own between XO and the daemon that
// records the path of every request ("record"), and in "old-host" mode also
// answers POST /jsonrpc with 200 text/xml as hosts without JSON-RPC do, which
// makes XO's `auto` transport fall back to XML-RPC.  The step "wire" reports
// paths and methods seen.
import http from 'node:http'
import readline from 'node:readline'
import { createClient } from 'xen-api'

const args = Object.fromEntries(
  process.argv.slice(2).map(a => {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a)
    if (!m) throw new Error('bad argument ' + a)
    return [m[1], m[2] ?? true]
  })
)
const steps = String(args.steps ?? 'connect').split(',')
const STEP_TIMEOUT = Number(args['step-timeout'] ?? 20) * 1e3

// XO logs warnings with console.warn/console.error: keep them on stderr.
const out = obj => process.stdout.write(JSON.stringify(obj) + '\n')

const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
async function ask(action, params = {}) {
  out({ ask: action, ...params })
  const { value, done } = await stdinLines.next()
  if (done) throw new Error('no answer to ' + action)
  const ans = JSON.parse(value)
  if (!ans.ok) throw new Error(`${action} failed on the test side: ${ans.error}`)
  return ans
}

function withTimeout(promise, what, ms = STEP_TIMEOUT) {
  let t
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms)
    }),
  ]).finally(() => clearTimeout(t))
}

function assert(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg)
}

// Resolve when pred(xapi) is true, re-checking whenever XO's object cache changes.
function waitCache(xapi, pred, what) {
  return withTimeout(
    new Promise(resolve => {
      const check = () => {
        const v = pred()
        if (v) {
          xapi.objects.removeListener('add', check)
          xapi.objects.removeListener('update', check)
          xapi.objects.removeListener('remove', check)
          resolve(v)
        }
      }
      xapi.objects.on('add', check)
      xapi.objects.on('update', check)
      xapi.objects.on('remove', check)
      check()
    }),
    what
  )
}

const cached = (xapi, type) => Object.values(xapi.objects.all).filter(o => o.$type === type)

// ---------------------------------------------------------------- proxy

async function startProxy(target, mode) {
  const seen = []
  const upstream = new URL(target)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const text = body.toString()
      const m = /"method":"([^"]*)"/.exec(text) ?? /<methodName>([^<]*)<\/methodName>/.exec(text)
      seen.push({ path: `${req.method} ${req.url}`, method: m?.[1] })
      if (mode === 'old-host' && req.url === '/jsonrpc') {
        // what a host without JSON-RPC answers: its XML-RPC server's reply
        const xml =
          '<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>MESSAGE_METHOD_UNKNOWN</value></data></array></value></member></struct></value></param></params></methodResponse>'
        res.writeHead(200, { 'Content-Type': 'text/xml', 'Content-Length': Buffer.byteLength(xml) })
        res.end(xml)
        return
      }
      const p = http.request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent },
        r => {
          res.writeHead(r.statusCode, r.rawHeaders)
          r.pipe(res)
        }
      )
      p.on('error', e => {
        res.writeHead(502)
        res.end(String(e))
      })
      p.end(body)
    })
  })
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => server.close() }
}

// ---------------------------------------------------------------- steps

const MIN_VM = {
  name_label: 'xo-async-vm',
  name_description: 'made by XO callAsync',
  user_version: 1,
  is_a_template: false,
  affinity: 'OpaqueRef:NULL',
  memory_static_max: 1 << 30,
  memory_dynamic_max: 1 << 30,
  memory_dynamic_min: 1 << 29,
  memory_static_min: 1 << 28,
  VCPUs_params: {},
  VCPUs_max: 1,
  VCPUs_at_startup: 1,
  actions_after_shutdown: 'destroy',
  actions_after_reboot: 'restart',
  actions_after_crash: 'restart',
  PV_bootloader: '',
  PV_kernel: '',
  PV_ramdisk: '',
  PV_args: '',
  PV_bootloader_args: '',
  PV_legacy_args: '',
  HVM_boot_policy: '',
  HVM_boot_params: {},
  platform: {},
  PCI_bus: '',
  other_config: {},
  recommendations: '',
}

const STEPS = {
  // login, pool.get_all_records, system.listMethods (in xapi.connect())
  async connect(xapi) {
    await withTimeout(xapi.connect(), 'connect')
    assert(xapi.status === 'connected', 'status connected')
    const pool = xapi.pool
    assert(pool && /^OpaqueRef:/.test(pool.$ref), 'one pool')
    assert(/^OpaqueRef:/.test(pool.master), 'pool.master is a host ref')
    assert(pool.other_config !== null && typeof pool.other_config === 'object', 'pool.other_config is a map')
    const types = xapi._types // from system.listMethods: every T with T.get_all_records
    assert(Array.isArray(types) && types.includes('VM') && types.includes('pool') && types.includes('task'), 'types')
    return { pool: pool.$ref, master: pool.master, types }
  },

  // plain calls, the error mapping and XO's map-entry writes (no events needed)
  async calls(xapi) {
    const master = xapi.pool.master
    const hostName = await xapi.call('host.get_name_label', master)
    assert(typeof hostName === 'string' && hostName !== '', 'host name_label')
    const hosts = await xapi.getAllRecords('host')
    assert(hosts.length === 1 && hosts[0].$ref === master, 'one host, the master')
    assert(typeof hosts[0].address === 'string' && hosts[0].address !== '', 'host.address')
    const major = await xapi.getField('host', master, 'API_version_major')
    const vms = await xapi.getAllRecords('VM')
    const dom0 = vms.find(vm => vm.is_control_domain)
    assert(dom0 !== undefined, 'a control domain')
    assert(dom0.$resident_on === undefined || dom0.resident_on === master, 'dom0 resident_on the master')
    const methods = await xapi.call('system.listMethods')
    assert(Array.isArray(methods) && methods.includes('VM.get_all_records'), 'system.listMethods')

    let code
    try {
      await xapi.call('VM.get_name_label', 'OpaqueRef:00000000-0000-0000-0000-00000000dead')
    } catch (e) {
      code = e.code
      assert(Array.isArray(e.params), 'XapiError params')
    }
    assert(code === 'HANDLE_INVALID', 'bad ref gives HANDLE_INVALID, got ' + code)
    try {
      code = undefined
      await xapi.call('VM.no_such_message', dom0.$ref)
    } catch (e) {
      code = e.code
    }
    assert(code === 'MESSAGE_METHOD_UNKNOWN', 'unknown method gives MESSAGE_METHOD_UNKNOWN, got ' + code)

    // setFieldEntry: remove_from_<map> of a missing key, then add_to_<map>
    const pool = xapi.pool.$ref
    await xapi.setFieldEntry('pool', pool, 'other_config', 'xo:cxapi-test', 'v1')
    await xapi.setFieldEntry('pool', pool, 'other_config', 'xo:cxapi-test', 'v2')
    const oc = await xapi.getField('pool', pool, 'other_config')
    assert(oc['xo:cxapi-test'] === 'v2', 'setFieldEntry wrote the map entry')
    await xapi.setFieldEntry('pool', pool, 'other_config', 'xo:cxapi-test', null)
    assert(!('xo:cxapi-test' in (await xapi.getField('pool', pool, 'other_config'))), 'entry removed')
    code = undefined
    try {
      await xapi.call('pool.add_to_other_config', pool, 'xo:dup', '1')
      await xapi.call('pool.add_to_other_config', pool, 'xo:dup', '2')
    } catch (e) {
      code = e.code
    }
    await xapi.call('pool.remove_from_other_config', pool, 'xo:dup')
    assert(code === 'MAP_DUPLICATE_KEY', 'add_to_ of an existing key gives MAP_DUPLICATE_KEY, got ' + code)

    // a write through XO's setField helper
    await xapi.setField('VM', dom0.$ref, 'name_description', 'set by XO')
    assert((await xapi.getField('VM', dom0.$ref, 'name_description')) === 'set by XO', 'setField')
    return { hostName, API_version_major: major, vms: vms.length }
  },

  // the initial fetch: event.inject, then <T>.get_all_records for every T
  async cache(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched (event.inject + get_all_records of every class)')
    const counts = {}
    const mismatches = []
    for (const type of xapi._types) {
      let recs
      try {
        recs = await xapi.call(`${type}.get_all_records`)
      } catch (e) {
        if (e.code === 'MESSAGE_REMOVED') continue
        throw e
      }
      if (type === 'session' || type === 'task' || type === 'message') continue // they churn
      const want = Object.keys(recs).sort()
      const have = cached(xapi, type)
        .map(o => o.$ref)
        .sort()
      counts[type] = have.length
      if (JSON.stringify(want) !== JSON.stringify(have)) mismatches.push({ type, want: want.length, have: have.length })
    }
    assert(mismatches.length === 0, 'cache == get_all_records: ' + JSON.stringify(mismatches))
    assert(counts.VM >= 1 && counts.host === 1 && counts.pool === 1, 'pool, host and VMs cached')
    return { counts }
  },

  // objects another client adds and removes reach the cache through event.from
  async events(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const label = 'made-elsewhere-' + Math.random().toString(36).slice(2)
    const { ref } = await ask('create_vm', { name_label: label })
    const vm = await waitCache(
      xapi,
      () => cached(xapi, 'VM').find(o => o.name_label === label),
      'event.from delivers the add of a VM made by another client'
    )
    assert(vm.$ref === ref, 'same ref')
    assert(vm.memory_static_max !== undefined && Array.isArray(vm.VBDs), 'the snapshot is a full record')
    await ask('destroy_vm', { ref })
    await waitCache(xapi, () => xapi.getObjectByRef(ref, null) === null, 'event.from delivers the del')
    return { ref }
  },

  // barrier(): pool.add_to_other_config "xo:barrier:<random>", wait for it in events
  async barrier(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const t0 = Date.now()
    await withTimeout(xapi.barrier(), 'barrier() (pool.add_to_other_config seen in event.from)')
    const first = Date.now() - t0
    const dom0 = cached(xapi, 'VM').find(o => o.is_control_domain)
    const again = await withTimeout(xapi.barrier(dom0.$ref), 'second barrier(ref)')
    assert(again.$ref === dom0.$ref, 'barrier(ref) returns the object')
    // XO removes its barrier keys afterwards (not awaited): they go away from the cache
    await waitCache(
      xapi,
      () => !Object.keys(xapi.pool.other_config).some(k => k.startsWith('xo:barrier:')),
      'barrier keys removed (pool.remove_from_other_config seen in events)'
    )
    return { ms: first }
  },

  // nothing changes for 2 s: a blocking event.from returns at most a few times
  async idle(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    let n = 0
    const count = () => ++n
    xapi.on('eventFetchingSuccess', count)
    await new Promise(resolve => setTimeout(resolve, 2000))
    xapi.removeListener('eventFetchingSuccess', count)
    assert(xapi.watchEventsError === undefined, 'event.from error: ' + xapi.watchEventsError)
    return { event_from_calls: n }
  },

  // a VM.set_name_label made by another client shows up through event watching
  async watch(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const { ref } = await ask('create_vm', { name_label: 'watch-me' })
    await waitCache(xapi, () => xapi.getObjectByRef(ref, null), 'the new VM in the cache')
    const label = 'renamed-elsewhere-' + Math.random().toString(36).slice(2)
    await ask('rename_vm', { ref, name_label: label })
    await waitCache(
      xapi,
      () => xapi.getObjectByRef(ref, null)?.name_label === label,
      'VM.set_name_label by another client seen in events'
    )
    await ask('destroy_vm', { ref })
    return { ref, name_label: label }
  },

  // callAsync: Async.VM.create, wait for the task through events, task.destroy
  async async(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const label = 'xo-async-' + Math.random().toString(36).slice(2)
    const ref = await withTimeout(
      xapi.callAsync('VM.create', { ...MIN_VM, name_label: label }),
      'callAsync(VM.create): the task reaches success in events'
    )
    assert(typeof ref === 'string' && /^OpaqueRef:/.test(ref), 'task.result decodes to the new ref: ' + ref)
    assert((await xapi.call('VM.get_name_label', ref)) === label, 'the VM exists')
    const vm = await waitCache(xapi, () => xapi.getObjectByRef(ref, null), 'the new VM in the cache')
    assert(vm.name_label === label, 'cached VM')

    // an explicit async message with an int argument (sent as a string in XML-RPC) and a void result
    const res = await withTimeout(xapi.callAsync('VM.set_order', ref, 3), 'callAsync(VM.set_order)')
    assert(res === '', 'void task result is "": ' + JSON.stringify(res))
    assert(Number(await xapi.getField('VM', ref, 'order')) === 3, 'VM.order set')

    // failure: error_info becomes an XapiError
    let code
    try {
      await withTimeout(
        xapi.callAsync('VM.destroy', 'OpaqueRef:00000000-0000-0000-0000-00000000dead'),
        'failing callAsync'
      )
    } catch (e) {
      code = e.code
    }
    assert(code === 'HANDLE_INVALID', 'failing async call gives HANDLE_INVALID, got ' + code)

    const gone = await withTimeout(xapi.callAsync('VM.destroy', ref), 'callAsync(VM.destroy)')
    assert(gone === '', 'VM.destroy task result is "": ' + JSON.stringify(gone))
    await waitCache(xapi, () => xapi.getObjectByRef(ref, null) === null, 'the destroyed VM leaves the cache')

    // XO destroys every task it waited for (task.destroy after callAsync)
    await waitCache(
      xapi,
      () => !cached(xapi, 'task').some(t => t.name_label.startsWith('Async.VM.')),
      'the Async tasks leave the cache after task.destroy'
    )
    return { ref }
  },
}

// ---------------------------------------------------------------- main

async function main() {
  let url = args.url
  let proxy
  if (args.proxy) {
    proxy = await startProxy(url, args.proxy)
    url = proxy.url
  }
  const needEvents = steps.some(s => s !== 'connect' && s !== 'calls' && s !== 'wire')
  const xapi = createClient({
    url,
    auth: { user: args.user ?? 'root', password: args.password },
    transport: args.transport ?? 'auto',
    allowUnauthorized: Boolean(args['allow-unauthorized']),
    watchEvents: needEvents ? undefined : false,
  })
  let failed = false
  for (const step of steps) {
    try {
      if (step === 'wire') {
        out({ step, ok: true, seen: proxy ? proxy.seen : null })
        continue
      }
      const fn = STEPS[step]
      if (fn === undefined) throw new Error('unknown step ' + step)
      const t0 = Date.now()
      const detail = await fn(xapi)
      out({ step, ok: true, ms: Date.now() - t0, ...detail })
    } catch (e) {
      out({ step, ok: false, error: String(e?.stack ?? e), code: e?.code, params: e?.params })
      failed = true
      break
    }
  }
  await withTimeout(xapi.disconnect(), 'disconnect', 5000).catch(() => {})
  proxy?.close()
  process.exit(failed ? 1 : 0)
}

main().catch(e => {
  out({ step: 'main', ok: false, error: String(e?.stack ?? e) })
  process.exit(1)
})

// Drive cxapi with Xen Orchestra's real connector, npm `xen-api` (pinned in
// package.json), the way xo-server uses it.  Run by tests/integration/test_xo.py.
//
//   node client.mjs --url=http://127.0.0.1:PORT --user=root --password=PW
//                   [--transport=auto|json-rpc|xml-rpc] [--allow-unauthorized]
//                   [--proxy=record|old-host] [--probe-close-delay=MS]
//                   [--tmpdir=DIR] --steps=connect,calls,cache,...
//
// Every step prints one JSON line on stdout: {"step": NAME, "ok": true, ...} or
// {"step": NAME, "ok": false, "error": ...}; the first failing step ends the
// run (exit 1), but for "wire", which still reports what the proxy saw.  A step that needs another client to act prints
// {"ask": ACTION, ...} and waits for one JSON line on stdin (the test does the
// action with its own client, then answers {"ok": true, ...}).
//
// --proxy puts a small HTTP proxy of our own between XO and the daemon that
// records the path of every request ("record"), and in "old-host" mode also
// answers POST /jsonrpc with 200 text/xml as hosts without JSON-RPC do, which
// makes XO's `auto` transport fall back to XML-RPC.  The step "wire" reports
// paths and methods seen (for HTTP transfers: the query and Content-Length).
// The storage steps (vdi, vdi-transfer, vdi-stream) do what xo-server's
// @xen-orchestra/xapi does; vdi-transfer writes its vhd export to --tmpdir.
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import readline from 'node:readline'
import { Readable } from 'node:stream'
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
    if (req.method !== 'POST') {
      // HTTP transfers (PUT /import_raw_vdi/, GET /export_raw_vdi/): streamed
      return forwardTransfer(req, res)
    }
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
  // Record the request head, then stream the body both ways (heads flushed
  // at once: the daemon answers an import before reading it).  XO's 1 PiB
  // Content-Length hack ends with XO closing the connection after the data:
  // the body then never "ends", so the upstream request is ended by hand and
  // its connection (one of its own) half-closed, which the daemon sees as
  // the end of the stream, as it would see XO's close.
  function forwardTransfer(req, res) {
    const u = new URL(req.url, 'http://x')
    seen.push({
      path: `${req.method} ${u.pathname}`,
      query: Object.fromEntries(u.searchParams),
      content_length: req.headers['content-length'],
      transfer_encoding: req.headers['transfer-encoding'],
    })
    const p = http.request({
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent: false,
    })
    p.on('response', r => {
      res.writeHead(r.statusCode, r.rawHeaders)
      res.flushHeaders()
      r.pipe(res)
    })
    p.on('error', e => {
      if (!res.headersSent) res.writeHead(502)
      res.end(String(e))
    })
    p.flushHeaders()
    req.pipe(p, { end: false })
    req.on('end', () => p.end())
    // --probe-close-delay=MS holds back the close of XO's probe (a PUT
    // without task_id): XO sends the real PUT without waiting for that close
    // to reach the daemon, so the daemon must not depend on it.
    const delay = req.method === 'PUT' && !u.searchParams.has('task_id') ? Number(args['probe-close-delay'] ?? 0) : 0
    req.on('close', () => {
      if (!req.complete) setTimeout(() => p.end(() => p.socket?.end()), delay)
    })
  }

  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => server.close() }
}

// ---------------------------------------------------------------- storage helpers
//
// What xo-server's @xen-orchestra/xapi does (vdi.mjs, task.mjs), replicated
// here because that package is not installed (see docs/clients.md).

const MIB = 1 << 20
const NULL_REF = 'OpaqueRef:NULL'
const isRef = v => typeof v === 'string' && /^OpaqueRef:[0-9a-f-]{36}$/.test(v)

// The bytes test_xo.py's pattern() makes: sha256(seed + i) * 128, repeated.
function pattern(n, seed) {
  const parts = []
  let have = 0
  for (let i = 0; have < n; i++) {
    const d = createHash('sha256').update(seed + String(i)).digest()
    const part = Buffer.concat(Array(128).fill(d))
    parts.push(part)
    have += part.length
  }
  return Buffer.concat(parts).subarray(0, n)
}

const sha256 = buf => createHash('sha256').update(buf).digest('hex')

// A Node stream of buf in chunks; with `length` set, as xo-server's import
// streams have it (raw imports require it there), else of unknown length.
function streamOf(buf, withLength) {
  const chunks = []
  for (let o = 0; o < buf.length; o += 512 * 1024) chunks.push(buf.subarray(o, o + 512 * 1024))
  const s = Readable.from(chunks, { objectMode: false })
  if (withLength) s.length = buf.length
  return s
}

// VDI_create: the record with xo-server's defaults; unset fields stay
// undefined (dropped by both transports).
function VDI_create(xapi, { name_label, name_description, virtual_size, SR = xapi.pool.default_SR }) {
  return xapi.call('VDI.create', {
    name_description,
    name_label,
    other_config: {},
    read_only: false,
    sharable: false,
    sm_config: undefined,
    SR,
    tags: undefined,
    type: 'user',
    virtual_size,
    xenstore_data: undefined,
  })
}

// task_create: '[XO] ' + name, destroyed by xen-api once settled
const task_create = (xapi, name) => xapi.createTask(`[XO] ${name}`)

// The task record as XO's cache holds it when it leaves `pending` (xen-api
// destroys it right after, so it is copied at that moment).
function settledTask(xapi, ref, what) {
  return waitCache(
    xapi,
    () => {
      const t = xapi.getObjectByRef(ref, undefined)
      return t !== undefined && t.status !== 'pending' && { ...t }
    },
    what
  )
}

// VDI_importContent: the task, other_config xo:import:*, then putResource
// with format and vdi in the query and the task; returns the decoded task
// result, the task record XO saw settle and other_config during the import.
async function VDI_importContent(xapi, ref, stream, format) {
  const vdi = await xapi.getRecord('VDI', ref)
  const sr = await xapi.getRecord('SR', vdi.SR)
  const taskRef = await task_create(xapi, `Importing content into VDI ${vdi.name_label} on SR ${sr.name_label}`)
  const pTask = settledTask(xapi, taskRef, 'the import task settles in the cache')
  pTask.catch(() => {})
  const uuid = await xapi.getField('task', taskRef, 'uuid')
  let result, otherConfig
  try {
    await vdi.update_other_config({
      'xo:import:task': uuid,
      'xo:import:length': stream.length === undefined ? undefined : String(stream.length),
    })
    otherConfig = await xapi.getField('VDI', ref, 'other_config')
    result = await withTimeout(
      xapi.putResource(stream, '/import_raw_vdi/', { query: { format, vdi: ref }, task: taskRef }),
      'putResource /import_raw_vdi/ and its task'
    )
  } finally {
    // xo-server does not wait for this; the test does, to check it
    await vdi.update_other_config({ 'xo:import:task': null, 'xo:import:length': null })
  }
  return { result, task: await pTask, taskRef, otherConfig }
}

// VDI_exportContent: getResource on /export_raw_vdi/ with its own task; the
// body read whole (and checkVdiExport's test of its first bytes).
async function VDI_exportContent(xapi, ref, format) {
  const name = await xapi.getField('VDI', ref, 'name_label')
  const taskRef = await task_create(xapi, `Exporting content of VDI ${name}`)
  const pTask = settledTask(xapi, taskRef, 'the export task settles in the cache')
  pTask.catch(() => {})
  const res = await withTimeout(
    xapi.getResource('/export_raw_vdi/', { query: { format, vdi: ref }, task: taskRef }),
    'getResource /export_raw_vdi/'
  )
  return { res, taskRef, pTask }
}

async function exportBytes(xapi, ref, format) {
  const { res, taskRef, pTask } = await VDI_exportContent(xapi, ref, format)
  const body = Buffer.from(await withTimeout(res.body.arrayBuffer(), 'the export body'))
  assert(body.subarray(0, 5).toString() !== 'HTTP/', 'checkVdiExport: no HTTP response in the body')
  const result = await withTimeout(res.task, 'the export task')
  return { body, headers: res.headers, result, task: await pTask, taskRef }
}

// the first thing imported: three 2 MiB blocks of data, two of zeros, then
// data again ending mid-block (test_xo.py's xo_data())
const XFER_SIZE = 16 * MIB
const xoData = () => Buffer.concat([pattern(6 * MIB, 'xo'), Buffer.alloc(4 * MIB), pattern(2 * MIB + 1234, 'xo-tail')])

function checkRaw(body, want, what) {
  assert(body.length === XFER_SIZE, `${what}: raw export of ${body.length} bytes, want ${XFER_SIZE}`)
  assert(body.subarray(0, want.length).equals(want), `${what}: the data reads back`)
  assert(
    body.subarray(want.length).every(x => x === 0),
    `${what}: zeros after the data`
  )
}


// ---------------------------------------------------------------- VM helpers
//
// What xo-server does to make, run and remove a VM (xo-server's
// xapi/index.mjs createVm / startVm / revertVm, @xen-orchestra/xapi's
// vm.mjs VM_snapshot / VM_destroy, vbd.mjs VBD_create, vif.mjs VIF_create),
// replicated here for the same reason as the storage helpers.

// waits in XO's cache until the VM is Running and its guest metrics (also
// in the cache) carry os_version and the first NIC's address
function waitRunningWithGuest(xapi, ref, what) {
  return waitCache(
    xapi,
    () => {
      const vm = xapi.getObjectByRef(ref, undefined)
      if (vm === undefined || vm.power_state !== 'Running') return false
      const gm = xapi.getObjectByRef(vm.guest_metrics, undefined)
      return (
        gm !== undefined &&
        gm.os_version?.name !== undefined &&
        gm.networks?.['0/ip'] !== undefined && { vm, gm, metrics: xapi.getObjectByRef(vm.metrics, undefined) }
      )
    },
    what
  )
}

const waitPowerState = (xapi, ref, state, what) =>
  waitCache(xapi, () => xapi.getObjectByRef(ref, undefined)?.power_state === state && xapi.getObjectByRef(ref), what)

// VBD_create: userdevice from VM.get_allowed_VBD_devices (not "3" for a
// disk, kept for CDs), unpluggable false, plugged when the VM runs
async function VBD_create(xapi, { VM, VDI, bootable = false, type = 'Disk' }) {
  const allowed = await xapi.call('VM.get_allowed_VBD_devices', VM)
  let userdevice = allowed[0]
  if (userdevice === '3' && allowed.length !== 1) userdevice = allowed[1]
  return xapi.call('VBD.create', {
    bootable,
    currently_attached: false,
    device: '',
    empty: VDI === undefined,
    mode: type === 'Disk' ? 'RW' : 'RO',
    other_config: {},
    qos_algorithm_params: {},
    qos_algorithm_type: '',
    type,
    unpluggable: false,
    userdevice,
    VDI,
    VM,
  })
}

// VIF_create: the first allowed device, the network's MTU, MAC left to xapi
async function VIF_create(xapi, { VM, network }) {
  const [device, MTU] = await Promise.all([
    xapi.call('VM.get_allowed_VIF_devices', VM).then(d => d[0]),
    xapi.getField('network', network, 'MTU'),
  ])
  return xapi.call('VIF.create', {
    device,
    MAC: '',
    MTU,
    network,
    other_config: {},
    qos_algorithm_params: {},
    qos_algorithm_type: '',
    VM,
  })
}

// VM_snapshot: callAsync VM.snapshot, then is_a_template false ("VM snapshots
// are marked as templates, unfortunately it does not play well with XVA
// export/import"), only LICENSE_RESTRICTION ignored.  The error, if any, is
// returned rather than thrown so that the step can go on and report it.
async function VM_snapshot(xapi, ref, name_label) {
  const snapRef = await withTimeout(xapi.callAsync('VM.snapshot', ref, name_label), 'callAsync(VM.snapshot)')
  let error
  try {
    await xapi.setField('VM', snapRef, 'is_a_template', false)
  } catch (e) {
    if (e.code !== 'LICENSE_RESTRICTION') error = [e.code, ...(e.params ?? [])]
  }
  return { snapRef, error }
}

// VM_destroy: hard_shutdown unless Halted, is_a_template false, the disks
// (VM_getDisks) read first, VM.destroy, then its snapshots (VM_destroy each)
// and its disks not used by another VM (VDI_destroy); failures on snapshots
// and disks are only warnings in xo-server: returned here.
async function VM_destroy(xapi, ref) {
  const vm = await xapi.getRecord('VM', ref)
  if (vm.power_state !== 'Halted') await xapi.call('VM.hard_shutdown', ref)
  await vm.set_is_a_template(false)
  const disks = []
  for (const vbd of await xapi.getRecords('VBD', vm.VBDs))
    if (vbd.type === 'Disk' && vbd.VDI !== NULL_REF && !disks.includes(vbd.VDI)) disks.push(vbd.VDI)
  await xapi.call('VM.destroy', ref)
  const warnings = []
  await Promise.all([
    ...vm.snapshots.map(s =>
      VM_destroy(xapi, s).then(
        w => warnings.push(...w),
        e => warnings.push({ snapshot: s, error: [e.code, ...(e.params ?? [])] })
      )
    ),
    ...disks.map(async vdi => {
      try {
        for (const vbd of await xapi.getField('VDI', vdi, 'VBDs')) {
          const other = await xapi.getField('VBD', vbd, 'VM')
          if (other !== ref && !(await xapi.getField('VM', other, 'is_control_domain'))) return
        }
        await xapi.callAsync('VDI.destroy', vdi)
      } catch (e) {
        warnings.push({ vdi, error: [e.code, ...(e.params ?? [])] })
      }
    }),
  ])
  return warnings
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

  // A VM's whole life as xo-server drives it: createVm from a seeded template
  // (callAsync VM.clone, the provisioning XML with the default SR, VM.provision,
  // VIF_create), startVm (callAsync VM.start) watched in the cache until
  // Running with guest metrics, VM_snapshot, revertVm of the running VM
  // (callAsync VM.revert, then a start since the snapshot was of a Running VM),
  // clean shutdown, VM_destroy.  XO's own errors that xo-server only warns
  // about (or that the test marks as known) are reported, not thrown.
  async 'vm-flow'(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const tag = Math.random().toString(36).slice(2)
    const out = { quirks: {} }
    const template = cached(xapi, 'VM').find(o => o.is_a_template && o.name_label === 'Debian Bookworm 12')
    assert(template !== undefined && template.is_default_template, 'the Debian 12 template in the cache')
    const srRef = xapi.pool.default_SR
    const sr = xapi.getObjectByRef(srRef)

    // createVm: _cloneVm, _getOrWaitObject
    const ref = await withTimeout(xapi.callAsync('VM.clone', template.$ref, 'xo-vm-' + tag), 'callAsync(VM.clone)')
    assert(isRef(ref), 'the clone task result decodes to a ref: ' + JSON.stringify(ref))
    let vm = await waitCache(xapi, () => xapi.getObjectByRef(ref, undefined), 'the clone in the cache')
    assert(vm.is_a_template === true && vm.is_a_snapshot === false, 'a clone of a template is a template')
    assert(vm.other_config.base_template_name === template.name_label, 'base_template_name')
    assert(/sr=""/.test(vm.other_config.disks ?? ''), 'the template provisioning XML: ' + vm.other_config.disks)
    // the disks of the form, as xo-server writes them (formatXml of
    // {provision: {disk: [{$: {bootable, device, size, sr}}]}}), on the default SR
    const size = 8 * 1024 * MIB
    await xapi.call('VM.remove_from_other_config', ref, 'disks')
    await xapi.call(
      'VM.add_to_other_config',
      ref,
      'disks',
      `<provision><disk bootable="true" device="0" size="${size}" sr="${sr.uuid}"/></provision>`
    )
    await xapi.call('VM.provision', ref)
    vm = await waitCache(
      xapi,
      () => {
        const v = xapi.getObjectByRef(ref)
        return v.is_a_template === false && v.VBDs.length === 1 && !('disks' in v.other_config) && v
      },
      'VM.provision: not a template, one VBD, the disks key gone'
    )
    const vbd = await waitCache(xapi, () => xapi.getObjectByRef(vm.VBDs[0], undefined), 'the VBD in the cache')
    const vdi = await waitCache(xapi, () => xapi.getObjectByRef(vbd.VDI, undefined), 'the VDI in the cache')
    assert(vbd.type === 'Disk' && vbd.bootable === true && vbd.userdevice === '0' && vbd.mode === 'RW', 'the VBD')
    assert(vdi.SR === srRef && Number(vdi.virtual_size) === size, 'the VDI on the default SR, of the size asked')
    assert(vdi.sm_config.vmhint === vm.uuid, 'sm_config:vmhint')

    // VIF_create on the pool's first network with a PIF (the management one)
    const network = cached(xapi, 'network').find(n => n.PIFs.length > 0) ?? cached(xapi, 'network')[0]
    const vifRef = await VIF_create(xapi, { VM: ref, network: network.$ref })
    const vif = await waitCache(xapi, () => xapi.getObjectByRef(vifRef, undefined), 'the VIF in the cache')
    assert(vif.device === '0' && vif.MAC_autogenerated === true && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(vif.MAC), 'the VIF')
    await waitCache(xapi, () => xapi.getObjectByRef(ref).VIFs.includes(vifRef), 'VM.VIFs lists the VIF')
    assert(xapi.getObjectByRef(ref).allowed_operations.includes('start'), 'start allowed')

    // startVm
    const checkRunning = ({ vm, gm, metrics }, what) => {
      assert(vm.resident_on === xapi.pool.master && Number(vm.domid) > 0, what + ': resident_on, domid')
      assert(metrics !== undefined && Number(metrics.VCPUs_number) === Number(vm.VCPUs_at_startup), what + ': VM_metrics')
      assert(metrics.current_domain_type === vm.domain_type, what + ': current_domain_type')
      assert(/^10\.0\.\d+\.\d+$/.test(gm.networks['0/ip']), what + ': NIC address ' + gm.networks['0/ip'])
      assert(gm.PV_drivers_detected === true, what + ': PV drivers')
      for (const r of vm.VBDs) assert(xapi.getObjectByRef(r).currently_attached === true, what + ': VBD attached')
      for (const r of vm.VIFs) assert(xapi.getObjectByRef(r).currently_attached === true, what + ': VIF attached')
      assert(!vm.allowed_operations.includes('start') && vm.allowed_operations.includes('hard_shutdown'), what + ': allowed_operations')
    }
    const started = await withTimeout(xapi.callAsync('VM.start', ref, false, false), 'callAsync(VM.start)')
    assert(started === '', 'VM.start result is "": ' + JSON.stringify(started))
    let run = await waitRunningWithGuest(xapi, ref, 'Running with guest metrics in the cache')
    // the attachments may arrive in a later event than the power state
    await waitCache(
      xapi,
      () => [...vm.VBDs, ...vm.VIFs].every(r => xapi.getObjectByRef(r).currently_attached),
      'VBD and VIF currently_attached in the cache'
    )
    run = await waitRunningWithGuest(xapi, ref, 'still Running')
    checkRunning(run, 'first start')
    out.os_version = run.gm.os_version
    out.ip = run.gm.networks['0/ip']
    const domid1 = run.vm.domid

    // VM_snapshot
    const snap = await VM_snapshot(xapi, ref, 'xo-snap-' + tag)
    out.quirks.snapshot_set_is_a_template = snap.error ?? null
    const snapshot = await waitCache(
      xapi,
      () => xapi.getObjectByRef(snap.snapRef, undefined),
      'the snapshot in the cache'
    )
    assert(snapshot.is_a_snapshot === true && snapshot.snapshot_of === ref, 'is_a_snapshot, snapshot_of')
    assert(snapshot.snapshot_info['power-state-at-snapshot'] === 'Running', 'power-state-at-snapshot')
    await waitCache(xapi, () => xapi.getObjectByRef(ref).snapshots.includes(snap.snapRef), 'VM.snapshots lists it')
    assert(xapi.getObjectByRef(ref).power_state === 'Running' && xapi.getObjectByRef(ref).domid === domid1, 'still running')

    // revertVm of the running VM: callAsync VM.revert (the VM is hard shut
    // down first, as the original does); the snapshot was of a Running VM:
    // barrier, then start it since it is Halted
    const reverted = await withTimeout(xapi.callAsync('VM.revert', snap.snapRef), 'callAsync(VM.revert)')
    assert(reverted === '', 'VM.revert result is "": ' + JSON.stringify(reverted))
    vm = await withTimeout(xapi.barrier(ref), 'barrier(vm) after the revert')
    assert(vm.power_state === 'Halted', 'reverted to Halted (no memory image): ' + vm.power_state)
    assert(vm.parent === snap.snapRef, 'parent is the snapshot')
    assert(vm.VBDs.length === 1 && xapi.getObjectByRef(vm.VBDs[0]).VDI !== vdi.$ref, 'a new disk')
    await waitCache(xapi, () => xapi.getObjectByRef(vdi.$ref, null) === null, 'the old disk leaves the cache')
    await withTimeout(xapi.callAsync('VM.start', ref, false, false), 'callAsync(VM.start) after the revert')
    run = await waitRunningWithGuest(xapi, ref, 'Running again with guest metrics')
    await waitCache(
      xapi,
      () => [...run.vm.VBDs, ...run.vm.VIFs].every(r => xapi.getObjectByRef(r).currently_attached),
      'VBD and VIF currently_attached after the second start'
    )
    run = await waitRunningWithGuest(xapi, ref, 'still Running')
    checkRunning(run, 'second start')
    assert(run.vm.domid !== domid1, 'a new domain')

    await withTimeout(xapi.callAsync('VM.clean_shutdown', ref), 'callAsync(VM.clean_shutdown) again')
    vm = await waitPowerState(xapi, ref, 'Halted', 'Halted again')
    await waitCache(
      xapi,
      () => {
        const v = xapi.getObjectByRef(ref)
        return (
          Object.keys(v.current_operations).length === 0 &&
          v.allowed_operations.includes('start') &&
          [...v.VBDs, ...v.VIFs].every(r => !xapi.getObjectByRef(r).currently_attached)
        )
      },
      'Halted: no current operations, start allowed, nothing attached'
    )
    const disks = vm.VBDs.map(r => xapi.getObjectByRef(r).VDI)
    const snapDisks = snapshot.VBDs.map(r => xapi.getObjectByRef(r, undefined)?.VDI).filter(Boolean)

    // VM_destroy
    out.quirks.destroy_warnings = await withTimeout(VM_destroy(xapi, ref), 'VM_destroy')
    await waitCache(xapi, () => xapi.getObjectByRef(ref, null) === null, 'the VM leaves the cache')
    await waitCache(
      xapi,
      () => disks.every(r => xapi.getObjectByRef(r, null) === null),
      'its disks leave the cache'
    )
    await waitCache(
      xapi,
      () => !cached(xapi, 'task').some(t => t.name_label.startsWith('Async.VM.') || t.name_label.startsWith('Async.VDI.')),
      'the Async tasks leave the cache after task.destroy'
    )
    out.snapshot_left = xapi.getObjectByRef(snap.snapRef, null) !== null
    return { ref, snapshot: snap.snapRef, vdis: disks, snapshot_vdis: snapDisks, template: template.$ref, ...out }
  },

  // VDIs the way xo-server handles them: VDI_create, snapshotVdi
  // (callAsync VDI.snapshot, wait for the object, set its name), VDI_clone,
  // _resizeVdi (callAsync VDI.resize), VDI_destroy; the cache follows
  // (SR.VDIs, snapshot_of / snapshots, the hidden base, virtual_size).
  async vdi(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const srRef = xapi.pool.default_SR
    const sr = xapi.getObjectByRef(srRef)
    assert(sr.type === 'file', 'pool.default_SR is the file SR: ' + sr.type)
    const label = 'xo-vdi-' + Math.random().toString(36).slice(2)
    const ref = await VDI_create(xapi, { name_label: label, name_description: 'made by XO', virtual_size: 64 * MIB })
    assert(isRef(ref), 'VDI.create returns a ref: ' + ref)
    const vdi = await waitCache(xapi, () => xapi.getObjectByRef(ref, undefined), 'the new VDI in the cache')
    assert(vdi.name_label === label && vdi.name_description === 'made by XO', 'names')
    assert(Number(vdi.virtual_size) === 64 * MIB, 'virtual_size ' + vdi.virtual_size)
    assert(vdi.$SR.$ref === srRef && vdi.managed === true && vdi.is_a_snapshot === false, '$SR, managed, not a snapshot')
    assert(vdi.read_only === false && vdi.type === 'user' && vdi.snapshot_of === NULL_REF, 'read_only, type, snapshot_of')
    await waitCache(xapi, () => xapi.getObjectByRef(srRef).VDIs.includes(ref), 'SR.VDIs lists the new VDI')

    // snapshotVdi
    const snapRef = await withTimeout(xapi.callAsync('VDI.snapshot', ref), 'callAsync(VDI.snapshot)')
    assert(isRef(snapRef), 'the snapshot task result decodes to a ref: ' + JSON.stringify(snapRef))
    let snap = await waitCache(xapi, () => xapi.getObjectByRef(snapRef, undefined), 'the snapshot in the cache')
    await snap.set_name_label(label + ' snap')
    snap = await waitCache(
      xapi,
      () => xapi.getObjectByRef(snapRef).name_label === label + ' snap' && xapi.getObjectByRef(snapRef),
      'the snapshot renamed'
    )
    assert(snap.is_a_snapshot === true && snap.snapshot_of === ref, 'is_a_snapshot, snapshot_of')
    assert(snap.$snapshot_of === xapi.getObjectByRef(ref), '$snapshot_of getter finds the VDI in the cache')
    assert(Number(snap.virtual_size) === 64 * MIB && snap.$SR.$ref === srRef, 'snapshot size and SR')
    // a Date in XML-RPC, "YYYYMMDDTHH:MM:SSZ" in JSON-RPC
    const st = snap.snapshot_time
    const year = st instanceof Date ? st.getUTCFullYear() : Number(String(st).slice(0, 4))
    assert(year >= 2024, 'snapshot_time set: ' + st)
    await waitCache(
      xapi,
      () => xapi.getObjectByRef(ref).snapshots.includes(snapRef),
      'VDI.snapshots of the original lists the snapshot'
    )
    const base1 = xapi.getObjectByRef(ref).sm_config['vhd-parent']
    assert(base1 !== undefined && snap.sm_config['vhd-parent'] === base1, 'both over the same base: ' + base1)

    // VDI_clone
    const cloneRef = await withTimeout(xapi.callAsync('VDI.clone', ref), 'callAsync(VDI.clone)')
    assert(isRef(cloneRef), 'the clone task result decodes to a ref: ' + JSON.stringify(cloneRef))
    const clone = await waitCache(xapi, () => xapi.getObjectByRef(cloneRef, undefined), 'the clone in the cache')
    assert(clone.is_a_snapshot === false && clone.snapshot_of === NULL_REF, 'a clone is a plain VDI')
    assert(clone.name_label === label && Number(clone.virtual_size) === 64 * MIB, 'the clone copies name and size')
    assert(!xapi.getObjectByRef(ref).snapshots.includes(cloneRef), 'a clone is not in snapshots')
    const base2 = await waitCache(
      xapi,
      () => {
        const p = xapi.getObjectByRef(ref).sm_config['vhd-parent']
        return p !== base1 && p
      },
      'the original moves over the clone base'
    )
    assert(clone.sm_config['vhd-parent'] === base2, 'clone over the new base')
    const bases = cached(xapi, 'VDI').filter(o => o.uuid === base1 || o.uuid === base2)
    assert(
      bases.length === 2 && bases.every(b => b.managed === false && b.read_only === true && b.$SR.$ref === srRef),
      'the hidden bases are in the cache, unmanaged and read-only'
    )
    await waitCache(
      xapi,
      () => [ref, snapRef, cloneRef].every(r => xapi.getObjectByRef(srRef).VDIs.includes(r)),
      'SR.VDIs lists the VDI, its snapshot and its clone'
    )

    // _resizeVdi: an int argument (a string in XML-RPC), a void result
    const res = await withTimeout(xapi.callAsync('VDI.resize', ref, 128 * MIB), 'callAsync(VDI.resize)')
    assert(res === '', 'VDI.resize result is "": ' + JSON.stringify(res))
    await waitCache(
      xapi,
      () => Number(xapi.getObjectByRef(ref).virtual_size) === 128 * MIB,
      'the new virtual_size in the cache'
    )
    let code, params
    try {
      await withTimeout(xapi.callAsync('VDI.resize', ref, 32 * MIB), 'callAsync(VDI.resize) to shrink')
    } catch (e) {
      ;({ code, params } = e)
    }
    assert(code === 'SR_BACKEND_FAILURE_79', 'shrinking gives SR_BACKEND_FAILURE_79, got ' + code)

    // the cache against another client's get_record
    const { records } = await ask('vdi_records', { refs: [ref, snapRef, cloneRef] })
    for (const r of [ref, snapRef, cloneRef]) {
      const c = xapi.getObjectByRef(r)
      const o = records[r]
      for (const f of ['uuid', 'name_label', 'SR', 'is_a_snapshot', 'snapshot_of', 'managed', 'read_only', 'location'])
        assert(JSON.stringify(c[f]) === JSON.stringify(o[f]), `${f} of ${r}: cache ${c[f]} vs ${o[f]}`)
      for (const f of ['virtual_size', 'physical_utilisation'])
        assert(Number(c[f]) === Number(o[f]), `${f} of ${r}: cache ${c[f]} vs ${o[f]}`)
      assert(JSON.stringify([...c.snapshots].sort()) === JSON.stringify([...o.snapshots].sort()), 'snapshots of ' + r)
      assert(JSON.stringify(c.sm_config) === JSON.stringify(o.sm_config), 'sm_config of ' + r)
    }

    // VDI_destroy (callAsync, HANDLE_INVALID counts as destroyed)
    const destroy = r =>
      withTimeout(xapi.callAsync('VDI.destroy', r), 'callAsync(VDI.destroy)').catch(e => {
        if (e.code !== 'HANDLE_INVALID') throw e
      })
    assert((await destroy(snapRef)) === '', 'VDI.destroy result is ""')
    await waitCache(
      xapi,
      () => xapi.getObjectByRef(snapRef, null) === null && !xapi.getObjectByRef(ref).snapshots.includes(snapRef),
      'the destroyed snapshot leaves the cache and VDI.snapshots'
    )
    await destroy(cloneRef)
    await destroy(ref)
    await destroy(ref) // again: HANDLE_INVALID, as xo-server ignores it
    await waitCache(
      xapi,
      () => [ref, cloneRef].every(r => xapi.getObjectByRef(r, null) === null && !xapi.getObjectByRef(srRef).VDIs.includes(r)),
      'the destroyed VDIs leave the cache and SR.VDIs'
    )
    await waitCache(
      xapi,
      () => !cached(xapi, 'task').some(t => t.name_label.startsWith('Async.VDI.')),
      'the Async.VDI tasks leave the cache after task.destroy'
    )
    return { ref, snapshot: snapRef, clone: cloneRef, bases: [base1, base2], shrink_error: [code, ...(params ?? [])] }
  },

  // VDI_importContent / VDI_exportContent as xo-server does them:
  // putResource of a Node stream with its length on /import_raw_vdi/ (XO
  // sends an empty probe PUT without task_id first), getResource of
  // /export_raw_vdi/ in raw and vhd; tasks of XO's own, settled in events.
  async 'vdi-transfer'(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const tag = Math.random().toString(36).slice(2)
    const data = xoData()
    const a = await VDI_create(xapi, { name_label: 'xo-import-' + tag, virtual_size: XFER_SIZE })
    const out = { vdis: { a }, data_len: data.length, data_sha256: sha256(data) }

    const imp = await VDI_importContent(xapi, a, streamOf(data, true), 'raw')
    assert(imp.result === a, 'the import task result decodes to the VDI: ' + JSON.stringify(imp.result))
    assert(imp.task.status === 'success', 'import task status ' + imp.task.status)
    assert(imp.task.result === `<value>${a}</value>`, 'import task.result ' + imp.task.result)
    assert(imp.task.name_label.startsWith('[XO] Importing content into VDI xo-import-'), imp.task.name_label)
    assert(Number(imp.task.progress) === 1, 'import progress 1: ' + imp.task.progress)
    assert(
      imp.otherConfig['xo:import:task'] === imp.task.uuid && imp.otherConfig['xo:import:length'] === String(data.length),
      'other_config xo:import:* during the import: ' + JSON.stringify(imp.otherConfig)
    )
    await waitCache(
      xapi,
      () => !Object.keys(xapi.getObjectByRef(a).other_config).some(k => k.startsWith('xo:import:')),
      'xo:import:* removed from other_config'
    )
    await waitCache(
      xapi,
      () => Number(xapi.getObjectByRef(a).physical_utilisation) > data.length - 4 * MIB,
      'physical_utilisation of the filled VDI in the cache'
    )

    const raw = await exportBytes(xapi, a, 'raw')
    checkRaw(raw.body, data, 'raw export')
    assert(raw.task.status === 'success', 'export task status ' + raw.task.status)
    assert(raw.task.name_label === `[XO] Exporting content of VDI xo-import-${tag}`, raw.task.name_label)
    assert(raw.headers['content-length'] === String(XFER_SIZE), 'raw Content-Length ' + raw.headers['content-length'])
    out.raw_export = { result: raw.result, status: raw.task.status }

    const vhd = await exportBytes(xapi, a, 'vhd')
    assert(vhd.task.status === 'success', 'vhd export task ' + vhd.task.status)
    assert(vhd.headers['content-type'] === 'application/vhd', 'vhd Content-Type ' + vhd.headers['content-type'])
    assert(vhd.headers['content-length'] === String(vhd.body.length), 'vhd Content-Length')
    assert(vhd.body.subarray(0, 8).toString() === 'conectix', 'a VHD starts with its footer copy')
    assert(vhd.body.subarray(-512, -504).toString() === 'conectix', 'a VHD ends with its footer')
    assert(vhd.body.length < data.length, 'the zero blocks are not in the VHD: ' + vhd.body.length)
    if (args.tmpdir) {
      out.vhd_file = path.join(args.tmpdir, 'xo-export.vhd')
      writeFileSync(out.vhd_file, vhd.body)
    }
    out.vhd_len = vhd.body.length

    await waitCache(
      xapi,
      () => !cached(xapi, 'task').some(t => t.name_label.startsWith('[XO] ')),
      'the [XO] tasks leave the cache after task.destroy'
    )
    return out
  },

  // putResource of Node streams of no known length: XO sends its probe and
  // then the data with Content-Length 1 PiB, and closes after the data.
  // First VDI to VDI as xo-server replicates (the vhd export's undici body
  // piped into an import with format=vhd), then a raw stream.
  async 'vdi-stream'(xapi) {
    await withTimeout(xapi.objectsFetched, 'objectsFetched')
    const tag = Math.random().toString(36).slice(2)
    const data = xoData()
    const a = await VDI_create(xapi, { name_label: 'xo-source-' + tag, virtual_size: XFER_SIZE })
    const b = await VDI_create(xapi, { name_label: 'xo-vhd-copy-' + tag, virtual_size: XFER_SIZE })
    const c = await VDI_create(xapi, { name_label: 'xo-raw-stream-' + tag, virtual_size: XFER_SIZE })
    const out = { vdis: { a, b, c } }
    const imp = await VDI_importContent(xapi, a, streamOf(data, true), 'raw')
    assert(imp.result === a, 'the source filled: ' + JSON.stringify(imp.result))

    const exp = await VDI_exportContent(xapi, a, 'vhd')
    const copy = await VDI_importContent(xapi, b, exp.res.body, 'vhd')
    await withTimeout(exp.res.task, 'the export task of the copy')
    out.vhd_stream_import = {
      result: copy.result ?? null,
      task: { status: copy.task.status, result: copy.task.result, error_info: copy.task.error_info },
    }
    // with the 1 PiB hack xen-api ignores a VDI_IO_ERROR in the task
    assert(
      copy.task.status === 'success' ? copy.result === b : copy.task.error_info[0] === 'VDI_IO_ERROR',
      'vhd stream import: ' + JSON.stringify(out.vhd_stream_import)
    )
    checkRaw((await exportBytes(xapi, b, 'raw')).body, data, 'vhd stream import')

    const rawData = pattern(5 * MIB + 17, 'xo-raw-stream')
    const rs = await VDI_importContent(xapi, c, streamOf(rawData, false), 'raw')
    out.raw_stream_import = {
      result: rs.result ?? null,
      task: { status: rs.task.status, result: rs.task.result, error_info: rs.task.error_info },
    }
    assert(
      rs.task.status === 'success' ? rs.result === c : rs.task.error_info[0] === 'VDI_IO_ERROR',
      'raw stream import: ' + JSON.stringify(out.raw_stream_import)
    )
    checkRaw((await exportBytes(xapi, c, 'raw')).body, rawData, 'raw stream import')
    out.raw_stream_sha256 = sha256(rawData)

    await waitCache(
      xapi,
      () => !cached(xapi, 'task').some(t => t.name_label.startsWith('[XO] ')),
      'the [XO] tasks leave the cache after task.destroy'
    )
    return out
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
  // what was on the wire up to a failure helps to tell why
  if (failed && steps.includes('wire')) out({ step: 'wire', ok: true, seen: proxy ? proxy.seen : null })
  await withTimeout(xapi.disconnect(), 'disconnect', 5000).catch(() => {})
  proxy?.close()
  process.exit(failed ? 1 : 0)
}

main().catch(e => {
  out({ step: 'main', ok: false, error: String(e?.stack ?? e) })
  process.exit(1)
})

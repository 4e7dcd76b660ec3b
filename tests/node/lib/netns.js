// A client machine on the other end of a cable the test can pull: a network namespace joined to this host by
// a veth pair on a private /30. Processes started with `spawn` live in the namespace and reach the host at
// `hostAddress`; `pullCable()` takes the namespace's end of the link down, after which nothing more passes in
// either direction: no close frame, no FIN, no RST, as when a cable is unplugged or a mobile client drops off
// the network. Needs root and iproute2 (`ip netns`, veth), which the suite runs with.
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { onScenarioEnd } from './harness.js'

const run = promisify(execFile)

async function ip (...args) {
  try {
    await run('ip', args)
  } catch (err) {
    const detail = (err.stderr || err.message || '').toString().trim()
    throw new Error(`\`ip ${args.join(' ')}\` failed: ${detail}. This test puts a client in a network namespace: it needs root and iproute2 (scripts/setup.sh installs it)`)
  }
}

/** Whether an interface of this host already has `address`. */
async function addressInUse (address) {
  const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show'])
  return stdout.includes(` ${address}/`)
}

/**
 * Creates the namespace and the link; removed when the scenario ends. Names and the /30 (in 10.213.0.0/16)
 * come from the pid, so suites running at the same time on one machine do not collide.
 */
export async function cableNetwork () {
  const tag = `fc${process.pid}`
  for (let tries = 0; tries < 64; tries += 1) {
    const slot = (process.pid + tries) % 16384
    const subnet = `10.213.${slot >> 6}`
    const hostAddress = `${subnet}.${((slot & 63) << 2) + 1}`
    const peerAddress = `${subnet}.${((slot & 63) << 2) + 2}`
    if (await addressInUse(hostAddress)) continue
    const network = new CableNetwork({ namespace: `${tag}ns`, hostSide: `${tag}h`, peerSide: `${tag}p`, hostAddress, peerAddress })
    onScenarioEnd(() => network.dispose())
    await network.create()
    return network
  }
  throw new Error('no free /30 left in 10.213.0.0/16 for the test network')
}

class CableNetwork {
  constructor (names) {
    Object.assign(this, names)
    this.children = new Set()
  }

  async create () {
    await ip('netns', 'add', this.namespace)
    this.created = true
    await ip('link', 'add', this.hostSide, 'type', 'veth', 'peer', 'name', this.peerSide)
    await ip('link', 'set', this.peerSide, 'netns', this.namespace)
    await ip('addr', 'add', `${this.hostAddress}/30`, 'dev', this.hostSide)
    await ip('link', 'set', this.hostSide, 'up')
    await ip('-n', this.namespace, 'addr', 'add', `${this.peerAddress}/30`, 'dev', this.peerSide)
    await ip('-n', this.namespace, 'link', 'set', this.peerSide, 'up')
    await ip('-n', this.namespace, 'link', 'set', 'lo', 'up')
  }

  /** Starts `command args` inside the namespace. */
  spawn (command, args, options = {}) {
    const child = spawn('ip', ['netns', 'exec', this.namespace, command, ...args], options)
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    return child
  }

  /** Takes the namespace's end of the link down: from now on nothing passes, and the peer says nothing. */
  pullCable () {
    return ip('-n', this.namespace, 'link', 'set', this.peerSide, 'down')
  }

  async dispose () {
    for (const child of this.children) child.kill('SIGKILL')
    if (!this.created) return
    this.created = false
    // Deleting the namespace deletes its end of the veth pair, and with it the host's end.
    await run('ip', ['netns', 'del', this.namespace]).catch(() => {})
    await run('ip', ['link', 'del', this.hostSide]).catch(() => {})
  }
}

# frozen_string_literal: true

require "fiddle"
require "objspace"
require "tmpdir"

# GET /debug/memory (only with MEMORY_DEBUG=1): what this process holds, for the idle-memory comparison of
# docs/benchmarks.md. The same route serves both runs of the app (Ferrocable and plain Action Cable), so a
# figure read here means the same thing in both. `?gc=1` runs a full GC first; `?trim=1` then returns the free
# memory of malloc's arenas to the system (malloc_trim), to show how much of the RSS was freed memory.
class MemoryController < ActionController::Base
  GC_KEYS = %i[count major_gc_count minor_gc_count heap_allocated_pages heap_live_slots heap_free_slots
    total_allocated_objects total_freed_objects malloc_increase_bytes oldmalloc_increase_bytes].freeze
  MALLINFO_FIELDS = %i[arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost].freeze

  def memory
    GC.start(full_mark: true, immediate_sweep: true) if params[:gc]
    trimmed = params[:trim] ? malloc_trim : nil
    render json: {
      pid: Process.pid,
      smaps_rollup: smaps_rollup,
      gc: GC.stat.slice(*GC_KEYS),
      objects: ObjectSpace.count_objects.slice(:TOTAL, :FREE, :T_OBJECT, :T_STRING, :T_ARRAY, :T_HASH, :T_DATA,
        :T_IMEMO),
      memsize_of_all: ObjectSpace.memsize_of_all,
      mallinfo: mallinfo,
      malloc_trim: trimmed,
      arenas: arenas,
      db_pool: ActiveRecord::Base.connection_pool.stat,
      threads: Thread.list.size,
      native_threads: Dir.children("/proc/self/task").size
    }
  end

  private

  def smaps_rollup
    File.readlines("/proc/self/smaps_rollup").drop(1).to_h do |line|
      name, value = line.split(":", 2)
      [name, value.to_i]
    end
  end

  def libc
    @libc ||= Fiddle.dlopen(nil)
  end

  # glibc's malloc statistics over all arenas (bytes): `arena` is what the arenas took from the system,
  # `uordblks` what is in use, `fordblks` what is free inside them, `hblkhd` the mmapped chunks.
  def mallinfo
    # mallinfo2 returns its struct by value (10 size_t), which Fiddle cannot declare; call it through a
    # caller-provided buffer instead: on x86-64 a struct of this size is returned via a hidden pointer.
    buffer = Fiddle::Pointer.malloc(MALLINFO_FIELDS.size * 8)
    Fiddle::Function.new(libc["mallinfo2"], [Fiddle::TYPE_VOIDP], Fiddle::TYPE_VOIDP).call(buffer)
    MALLINFO_FIELDS.zip(buffer.to_str.unpack("Q*")).to_h
  rescue Fiddle::DLError
    nil
  end

  # Per arena (malloc_info's XML): [in use, free inside it, taken from the system] in bytes, so the growth of
  # one arena (the tokio worker's, the Ruby threads') can be told apart from the others'.
  def arenas
    path = File.join(Dir.tmpdir, "malloc-info-#{Process.pid}.xml")
    file = Fiddle::Function.new(libc["fopen"], [Fiddle::TYPE_VOIDP, Fiddle::TYPE_VOIDP], Fiddle::TYPE_VOIDP)
      .call(path, "w")
    Fiddle::Function.new(libc["malloc_info"], [Fiddle::TYPE_INT, Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT).call(0, file)
    Fiddle::Function.new(libc["fclose"], [Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT).call(file)
    File.read(path).scan(%r{<heap nr="\d+">.*?</heap>}m).map do |heap|
      free = heap[/<total type="rest" count="\d+" size="(\d+)"/, 1].to_i
      fast = heap[/<total type="fast" count="\d+" size="(\d+)"/, 1].to_i
      system = heap[/<system type="current" size="(\d+)"/, 1].to_i
      [system - free - fast, free + fast, system]
    end
  ensure
    File.delete(path) if path && File.exist?(path)
  end

  def malloc_trim
    Fiddle::Function.new(libc["malloc_trim"], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_INT).call(0)
  end
end

<?php
namespace App\Models;

use Some\Thing;

/**
 * Helper function.
 */
function helper(int $x): int {
    return $x * 2;
}

#[Attribute]
final class User extends Model implements JsonSerializable
{
    use HasFactory;

    private string $name;

    /** Constructor */
    public function __construct(string $name)
    {
        $this->name = $name;
    }

    public static function create(): static
    {
        $fn = function ($x) { return $x; };
        $arrow = fn($y) => $y;
        return new static('x');
    }

    #[Route('/x')]
    abstract protected function render(): string;
}

interface Repository
{
    public function find(int $id): ?User;
}

trait Loggable
{
    public function log(string $msg): void {}
}

enum Suit: string
{
    case Hearts = 'H';
    public function label(): string { return 'x'; }
}

namespace Other {
    function braced() {}
}
